"""Publishing against a real Redis: a batch is written whole or not at all."""

import json
from collections.abc import Iterator

import pytest
import redis

from dispatcher.publisher import publish
from tests.factories import entries


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
    entry_ids = publish(r, "tasks", "demo", payloads)
    written = entries(r)
    assert [entry_id for entry_id, _ in written] == entry_ids
    assert [json.loads(fields["payload"]) for _, fields in written] == payloads


def test_publish_refused_by_redis_writes_nothing(full_redis: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError):
        publish(full_redis, "tasks", "demo", [{"n": n} for n in range(10)])
    full_redis.config_set("maxmemory", 0)
    assert full_redis.exists("tasks") == 0
