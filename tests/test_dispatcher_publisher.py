"""Publishing against a real Redis: whole batches or nothing, and the backlog bound."""

import json
from collections.abc import Iterator

import pytest
import redis

from dispatcher.app import create_app
from dispatcher.publisher import publish
from dispatcher.settings import Settings
from pipeline_core.group_state import read_backlog
from pipeline_core.keys import Queue
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
