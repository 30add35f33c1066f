"""The stream-state gauges against a real Redis: NULL lag and Redis down included."""

import time
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, generate_latest

from dispatcher.settings import Settings
from dispatcher.stream_state import StreamStateCollector
from dispatcher.wsgi import connect_dispatcher
from harness.processes import free_port
from harness.redis_server import RedisServer
from pipeline_core.group_state import GroupState, read_group_state
from pipeline_core.redis_settings import RedisSettings
from tests.conftest import require_redis_server
from tests.factories import DEAD, GROUP, QUEUE, STREAM, add_entry, deliver_to


def read_state(client: redis.Redis) -> GroupState:
    return read_group_state(client, QUEUE)


def test_state_of_a_missing_stream_is_all_zero(r: redis.Redis) -> None:
    state = read_state(r)
    assert (state.length, state.lag, state.pending, state.dead_letters) == (0, 0, 0, 0)


def test_state_before_any_consumer_counts_everything_as_waiting(r: redis.Redis) -> None:
    add_entry(r, "demo")
    add_entry(r, "demo")
    state = read_state(r)
    assert (state.length, state.lag, len(state.consumers)) == (2, 2, 0)
    assert state.oldest_undelivered_age_s is not None
    assert 0 <= state.oldest_undelivered_age_s < 5


def test_state_reports_lag_pending_consumers_and_ages(r: redis.Redis) -> None:
    old_id = r.xadd(
        STREAM,
        {"task": "demo", "payload": "{}"},
        id=f"{int(time.time() * 1000) - 60_000}-0",
    )
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "pod-a", count=1)  # the old entry, now pending
    newest = add_entry(r, "demo")  # never delivered
    r.xadd(DEAD, {"task": "demo", "payload": "{}", "source_id": "1-0"})
    state = read_state(r)
    assert (state.length, state.lag, state.pending) == (2, 1, 1)
    assert (len(state.consumers), state.active_consumers(60)) == (1, 1)
    assert {c.name: c.pending for c in state.consumers} == {"pod-a": 1}
    assert state.oldest_pending_age_s is not None
    assert 59 < state.oldest_pending_age_s < 70  # from the entry ID of old_id
    assert state.oldest_undelivered_age_s is not None
    assert state.oldest_undelivered_age_s < 5  # newest was just added
    assert state.dead_letters == 1
    assert old_id and newest


def test_state_counts_the_lag_when_redis_reports_null(r: redis.Redis) -> None:
    ids = [add_entry(r, "demo") for _ in range(4)]
    r.xgroup_create(STREAM, GROUP, "0")
    r.xdel(STREAM, ids[1])  # a deletion past the group's position: Redis says lag NULL
    assert r.xinfo_groups(STREAM)[0]["lag"] is None
    state = read_state(r)
    assert (state.lag, state.lag_source) == (3, "counted")


def test_collector_exports_gauges_and_its_own_success(r: redis.Redis) -> None:
    registry = CollectorRegistry()
    registry.register(StreamStateCollector(r, QUEUE))
    add_entry(r, "demo")
    text = generate_latest(registry).decode()
    assert "pipeline_stream_state_up 1.0" in text
    assert "pipeline_stream_length 1.0" in text
    assert "pipeline_group_lag 1.0" in text


def test_collector_counts_delayed_tasks_and_how_overdue_the_first_is(
    r: redis.Redis,
) -> None:
    registry = CollectorRegistry()
    registry.register(StreamStateCollector(r, QUEUE))
    now_ms = int(time.time() * 1000)
    # Two waiting to be due: one 30 s overdue (no consumer promoted it), one later.
    r.zadd("{tasks}:delayed", {"1-1000000000000000001": now_ms - 30_000,
                               "1-1000000000000000002": now_ms + 60_000})  # fmt: skip
    samples = {
        s.name: s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name.startswith("pipeline_delayed")
    }
    assert samples["pipeline_delayed_tasks"] == 2
    assert 29 < samples["pipeline_delayed_oldest_overdue_seconds"] < 40


def test_collector_never_fails_the_scrape_when_redis_is_down() -> None:
    nowhere = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    down = connect_dispatcher(Settings(redis=nowhere), timeout_s=0.2)
    registry = CollectorRegistry()
    registry.register(StreamStateCollector(down, QUEUE))
    text = generate_latest(registry).decode()
    assert "pipeline_stream_state_up 0.0" in text
    assert "pipeline_stream_length" not in text


def test_collector_answers_quickly_while_redis_is_stalled(tmp_path: Path) -> None:
    require_redis_server()
    server = RedisServer(tmp_path / "redis").start()
    settings = Settings(redis=RedisSettings(url=server.url), state_timeout_s=0.3)
    stalled = connect_dispatcher(settings, timeout_s=settings.state_timeout_s)
    registry = CollectorRegistry()
    registry.register(StreamStateCollector(stalled, QUEUE))
    try:
        assert "pipeline_stream_state_up 1.0" in generate_latest(registry).decode()
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        started = time.monotonic()
        text = generate_latest(registry).decode()
        assert time.monotonic() - started < 2.0  # the state timeout, not a hang
        assert "pipeline_stream_state_up 0.0" in text
    finally:
        server.resume()
        server.kill()
