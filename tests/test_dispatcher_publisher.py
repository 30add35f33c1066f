"""Publishing against a real Redis: whole batches or nothing, and the backlog bound."""

import json
import time
from collections.abc import Iterator

import pytest
import redis

from cli.status import state_warnings
from dispatcher.app import create_app
from dispatcher.publisher import publish
from dispatcher.settings import Settings
from pipeline_core.group_state import MAX_ID, read_group_state
from pipeline_core.keys import Queue
from pipeline_core.lag import read_backlog
from pipeline_core.wire import encode_payload
from tests.factories import entries, entry_ids

QUEUE = Queue()


def backlog(client: redis.Redis) -> int:
    return read_backlog(client, QUEUE)


@pytest.fixture
def full_redis(r: redis.Redis) -> Iterator[redis.Redis]:
    """Redis out of memory under noeviction: every write is refused."""
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        yield r
    finally:
        r.config_set("maxmemory", 0)


def test_publish_writes_the_batch_in_order(r: redis.Redis) -> None:
    payloads = [{"n": n} for n in range(100)]
    entry_ids = publish(r, "tasks", "demo", [encode_payload(p) for p in payloads])
    written = entries(r)
    assert [entry_id for entry_id, _ in written] == entry_ids
    assert [json.loads(fields["payload"]) for _, fields in written] == payloads


def test_publish_refused_by_redis_writes_nothing(full_redis: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError):
        publish(
            full_redis, "tasks", "demo", [encode_payload({"n": n}) for n in range(10)]
        )
    full_redis.config_set("maxmemory", 0)
    assert full_redis.exists("tasks") == 0


def test_backlog_is_lag_plus_pending_of_the_group(r: redis.Redis) -> None:
    assert backlog(r) == 0  # no stream yet
    publish(r, "tasks", "demo", ["{}"] * 4)
    assert backlog(r) == 4  # no group yet: every entry waits
    r.xgroup_create("tasks", "workers", "0")
    r.xreadgroup("workers", "c1", {"tasks": ">"}, count=3)
    [first, *_] = entry_ids(r)
    r.xack("tasks", "workers", first)
    # Lag 1 (never delivered) + pending 2 (delivered, not acked).
    assert backlog(r) == 3


def test_backlog_counts_the_undelivered_when_redis_cannot_tell_the_lag(
    r: redis.Redis,
) -> None:
    ids = publish(r, "tasks", "demo", ["{}"] * 3)
    r.xgroup_create("tasks", "workers", "0")
    r.xdel("tasks", ids[1])  # a deleted entry past the group's position: lag is NULL
    assert r.xinfo_groups("tasks")[0]["lag"] is None
    assert backlog(r) == 2


def test_dispatch_refuses_with_429_while_the_backlog_is_full(r: redis.Redis) -> None:
    http = create_app(Settings(max_backlog=5, allow_anonymous=True), r).test_client()
    assert http.post("/dispatch", json={"num_messages": 3}).status_code == 202
    refused = http.post("/dispatch", json={"num_messages": 3})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.get_json() == {"error": "backlog full", "backlog": 3, "limit": 5}
    assert r.xlen("tasks") == 3  # nothing of the refused request was written
    assert http.post("/dispatch", json={"num_messages": 2}).status_code == 202


def test_dispatch_refuses_with_507_past_the_memory_budget(r: redis.Redis) -> None:
    used = int(r.info("memory")["used_memory"])
    http = create_app(
        Settings(allow_anonymous=True, memory_budget_bytes=used + 50_000), r
    ).test_client()
    assert http.post("/dispatch", json={"num_messages": 1}).status_code == 202
    refused = http.post(
        "/dispatch", json={"task": "demo", "payloads": [{"x": "y" * 30_000}]}
    )
    assert refused.status_code == 507 and refused.headers["Retry-After"] == "1"
    body = refused.get_json()
    assert body["error"] == "redis memory over budget"
    assert body["budget_bytes"] == used + 50_000
    assert r.xlen("tasks") == 1  # nothing of the refused request


def test_redis_refusing_writes_is_a_503_that_names_why(
    full_redis: redis.Redis,
) -> None:
    http = create_app(Settings(allow_anonymous=True), full_redis).test_client()
    refused = http.post("/dispatch", json={"num_messages": 2})
    assert refused.status_code == 503
    assert refused.get_json() == {
        "error": "redis unavailable",
        "reason": "redis is out of memory (maxmemory reached)",
    }


def test_a_stream_whose_ids_are_exhausted_is_named_by_dispatch_and_readiness(
    r: redis.Redis,
) -> None:
    r.xadd("tasks", {"foreign": "writer"}, id=MAX_ID)
    http = create_app(Settings(allow_anonymous=True), r).test_client()
    refused = http.post("/dispatch", json={"num_messages": 1})
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "stream cannot take entries"
    assert "another producer wrote it" in refused.get_json()["reason"]
    ready = http.get("/readyz")
    assert ready.status_code == 503 and "largest possible" in ready.get_json()["reason"]


def test_an_id_from_the_future_is_seen_and_ages_are_unknown_not_zero(
    r: redis.Redis,
) -> None:
    future = f"{int(time.time() * 1000) + 3_600_000}-0"
    r.xadd("tasks", {"task": "demo", "payload": "{}"}, id=future)
    ids = publish(r, "tasks", "demo", ["{}"] * 2)  # pinned after it
    assert all(i.split("-")[0] == future.split("-")[0] for i in ids)
    r.xgroup_create("tasks", "workers", "0")
    state = read_group_state(r, QUEUE)
    assert 3500 < state.last_id_ahead_s < 3700
    assert state.oldest_undelivered_age_s is None  # not a misleading 0.0
    assert any("in the future" in w for w in state_warnings(state))
