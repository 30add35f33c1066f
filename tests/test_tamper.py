"""What ACLs cannot refuse is detected (docs/security.md): work deleted from the stream
by something other than our trimming, dead letters deleted other than by replay, purge
or trimming by age, and IDs written by someone else: each a gauge an alert watches."""

import time

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from consumer.trimming import trim_acknowledged
from dispatcher import housekeeping
from dispatcher.stream_state import StreamStateCollector
from pipeline_core import dead_letters
from pipeline_core.group_state import GroupState, read_group_state
from pipeline_core.wire import stream_entries
from tests.factories import DEAD, GROUP, QUEUE, STREAM, add_entry, deliver_to

DAY_MS = 86_400_000
NAMES = (
    "pipeline_stream_unfinished_deleted",
    "pipeline_dead_letters_deleted_elsewhere",
    "pipeline_dead_letter_last_id_ahead_seconds",
)


def state(r: redis.Redis) -> GroupState:
    return read_group_state(r, QUEUE)


def gauges(r: redis.Redis) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(StreamStateCollector(r, QUEUE))
    values = {}
    for line in generate_latest(registry).decode().splitlines():
        name, _, value = line.partition(" ")
        if name in NAMES:
            values[name] = float(value)
    assert set(values) == set(NAMES)
    return values


def test_our_trimming_of_finished_work_is_not_reported(r: redis.Redis) -> None:
    ids = [add_entry(r, "demo") for _ in range(6)]
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "c1", count=4)
    r.xack(STREAM, GROUP, *ids[:3])  # ids[3] pending, ids[4:] never delivered
    assert trim_acknowledged(r, STREAM) == 3
    deliver_to(r, "c1", count=1)
    assert state(r).unfinished_deleted == 0
    assert gauges(r)["pipeline_stream_unfinished_deleted"] == 0


def test_a_stream_wiped_by_xadd_maxlen_is_reported(r: redis.Redis) -> None:
    ids = [add_entry(r, "demo") for _ in range(5)]
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "c1", count=3)
    r.xack(STREAM, GROUP, ids[0])  # finished: its deletion is harmless
    # What a stolen dispatcher password can do, and no ACL refuses:
    r.xadd(STREAM, {"task": "demo", "payload": "{}"}, maxlen=0)
    assert r.xlen(STREAM) == 0
    # 2 pending + 2 never delivered + the one just added: 5 unfinished, all gone
    assert state(r).unfinished_deleted == 5
    assert gauges(r)["pipeline_stream_unfinished_deleted"] == 5
    # It stays reported after the consumers carry on.
    add_entry(r, "demo")
    deliver_to(r, "c1", count=1)
    assert state(r).unfinished_deleted >= 3


def test_a_deleted_pending_entry_is_reported(r: redis.Redis) -> None:
    ids = [add_entry(r, "demo") for _ in range(3)]
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "c1", count=3)
    r.xdel(STREAM, ids[0])  # pending, older than the group's position
    assert state(r).unfinished_deleted == 1


def test_an_xdel_past_the_group_position_is_reported(r: redis.Redis) -> None:
    ids = [add_entry(r, "demo") for _ in range(4)]
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "c1", count=1)
    r.xdel(STREAM, ids[2])  # never delivered
    assert state(r).unfinished_deleted >= 1


def test_dead_letters_deleted_by_replay_purge_or_age_are_not_reported(
    r: redis.Redis,
) -> None:
    now_ms = int(time.time() * 1000)
    r.xadd(DEAD, {"task": "old"}, id=f"{now_ms - 20 * DAY_MS}-0")
    fresh = [r.xadd(DEAD, {"task": "demo", "payload": "{}"}) for _ in range(3)]
    assert housekeeping.trim_once(r, QUEUE, 14 * 86_400) == 1  # the 20-day-old one
    assert housekeeping.trim_once(r, QUEUE, 14 * 86_400) is None  # lock: this minute
    assert dead_letters.purge(r, QUEUE, [{"dead_id": fresh[1]}]) == 1
    assert dead_letters.purge(r, QUEUE, [{"dead_id": fresh[1]}]) == 0  # gone already
    assert len(dead_letters.replay(r, QUEUE, [{"dead_id": fresh[0]}])) == 1
    assert r.hget(QUEUE.audit_key, dead_letters.AUDIT_FIELD) == "3"
    assert (r.xlen(DEAD), state(r).dead_letters_deleted_elsewhere) == (1, 0)
    assert gauges(r)["pipeline_dead_letters_deleted_elsewhere"] == 0


def test_dead_letters_wiped_by_a_stolen_consumer_password_are_reported(
    r: redis.Redis,
) -> None:
    [r.xadd(DEAD, {"task": "demo", "payload": "{}"}) for _ in range(3)]
    r.xadd(DEAD, {"task": "x"}, maxlen=0)  # allowed to the consumer user (ACL)
    assert r.xlen(DEAD) == 0
    assert gauges(r)["pipeline_dead_letters_deleted_elsewhere"] == 4


def test_ids_written_by_someone_else_on_the_dead_letter_stream_are_reported(
    r: redis.Redis,
) -> None:
    r.xadd(DEAD, {"task": "x"}, id="18446744073709551615-1")
    assert gauges(r)["pipeline_dead_letter_last_id_ahead_seconds"] > 1e9


def test_trimming_by_age_runs_at_maxmemory_and_replay_is_refused_whole(
    r: redis.Redis,
) -> None:
    now_ms = int(time.time() * 1000)
    r.xadd(DEAD, {"task": "old"}, id=f"{now_ms - 20 * DAY_MS}-0")
    fresh = r.xadd(DEAD, {"task": "demo", "payload": "{}"})
    r.config_set("maxmemory", 1)
    try:
        assert dead_letters.trim_by_age(r, QUEUE, 14 * 86_400) == 1
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            dead_letters.replay(r, QUEUE, [{"dead_id": fresh}])
        assert r.xlen(DEAD) == 1  # the dead letter was not deleted without its copy
    finally:
        r.config_set("maxmemory", 0)


def entries_after(r: redis.Redis, entry_id: str) -> list[tuple[str, dict[str, str]]]:
    return stream_entries(r.xrange(STREAM, min=f"({entry_id}", max="+", count=100_000))


def test_the_documented_reset_clears_both_counts(r: redis.Redis) -> None:
    """docs/operations.md, 'After a tampering alert', step by step."""
    [add_entry(r, "demo") for _ in range(4)]
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "c1", count=2)
    r.xtrim(STREAM, maxlen=1, approximate=False)  # 3 gone: 2 pending, 1 never delivered
    add_entry(r, "demo")
    assert state(r).unfinished_deleted == 3
    # The consumers' reclaim drops pending entries found deleted (after CLAIM_IDLE_MS).
    r.xautoclaim(STREAM, GROUP, "c2", 0, "0-0")
    assert state(r).pending == 0
    info, [group] = r.xinfo_stream(STREAM), r.xinfo_groups(STREAM)
    delivered = group["last-delivered-id"]
    lag = len(entries_after(r, delivered))
    r.xgroup_setid(STREAM, GROUP, delivered, entries_read=info["entries-added"] - lag)
    assert state(r).unfinished_deleted == 0
    [r.xadd(DEAD, {"task": "demo"}) for _ in range(2)]
    r.xadd(DEAD, {"task": "x"}, maxlen=0)
    missing = state(r).dead_letters_deleted_elsewhere
    assert missing == 3
    r.hincrby(QUEUE.audit_key, dead_letters.AUDIT_FIELD, missing)
    assert gauges(r)["pipeline_dead_letters_deleted_elsewhere"] == 0
