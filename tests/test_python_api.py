"""Sending tasks from Python (`fn.send`, `send_many`, `send_with`, `send_task`) to real
consumer processes on a real Redis, and reading them back through `TaskRef`."""

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import consumer
from consumer import api
from harness.processes import Service, free_port
from pipeline_core.keys import Queue
from pipeline_core.payloads import PayloadError
from pipeline_core.redis_settings import RedisSettings
from pipeline_core.sending import SenderSettings
from tests import e2e_tasks
from tests.conftest import eventually
from tests.factories import STREAM, entries, entry_ids

pytestmark = pytest.mark.timeout(60)

FAST = {"CLAIM_IDLE_MS": "500", "CLAIM_INTERVAL_MS": "50", "BLOCK_MS": "100",
        "MAX_DELIVERIES": "2", "METRICS_PORT": "0",
        "TASK_MODULES": "tests.e2e_tasks"}  # fmt: skip


@pytest.fixture
def configured(redis_url: str, r: redis.Redis) -> Iterator[redis.Redis]:
    """The process's sender pointed at the test Redis, as a program would set it."""
    api.configure(SenderSettings(redis=RedisSettings(url=redis_url), max_backlog=50))
    yield r
    api.configure(SenderSettings(redis=RedisSettings(url=redis_url)))
    api.sender().close()


@pytest.fixture
def consumer_process(redis_url: str, tmp_path: Path) -> Iterator[Service]:
    service = Service(
        "consumer", {**FAST, "REDIS_URL": redis_url, "CONSUMER_NAME": "py-api"},
        tmp_path / "consumer.log",
    )  # fmt: skip
    yield service
    service.stop()


def test_send_and_wait_for_the_result(
    configured: redis.Redis, consumer_process: Service
) -> None:
    ref = e2e_tasks.resize.send(path="a.png", width=64)
    assert [ref.id] == entry_ids(configured)  # the task ID is its entry ID
    assert ref.result(timeout_s=30) == {
        "path": "a.png", "width": 64, "thumbnail": "a.png@64"
    }  # fmt: skip
    status = ref.status()
    assert (status["id"], status["task"], status["state"]) == (
        ref.id, "resize", "succeeded"
    )  # fmt: skip
    assert e2e_tasks.resize("b", 1)["thumbnail"] == "b@1"  # still a plain function


def test_send_many_in_order_and_send_with_a_key(
    configured: redis.Redis, consumer_process: Service
) -> None:
    refs = e2e_tasks.add.send_many([{"a": 1, "b": 2}, {"a": 3, "b": 4}])
    assert [ref.result(timeout_s=30) for ref in refs] == [3, 7]
    first = e2e_tasks.add.send_with({"a": 5, "b": 5}, idempotency_key="order-42")
    again = e2e_tasks.add.send_with({"a": 5, "b": 5}, idempotency_key="order-42")
    assert again.id == first.id and first.result(timeout_s=30) == 10
    assert configured.xlen(STREAM) <= 3  # the repeat wrote nothing (trimmed or not)
    with pytest.raises(consumer.IdempotencyConflictError):
        e2e_tasks.add.send_with({"a": 6, "b": 5}, idempotency_key="order-42")
    by_name = consumer.send_task("math.add", {"a": 20, "b": 22})
    assert by_name.result(timeout_s=30) == 42
    assert consumer.task_ref(by_name.id).status()["state"] == "succeeded"


def test_a_dead_task_raises_with_its_reason(
    configured: redis.Redis, consumer_process: Service
) -> None:
    ref = e2e_tasks.explode.send(x=1)
    with pytest.raises(consumer.TaskFailedError, match="this task always fails"):
        ref.result(timeout_s=30)
    assert ref.status()["state"] == "dead"


def test_result_times_out_and_a_queued_task_cancels(configured: redis.Redis) -> None:
    ref = e2e_tasks.add.send(a=1, b=1)  # no consumer: it waits
    with pytest.raises(TimeoutError, match="queued"):
        ref.result(timeout_s=0.2)
    assert ref.cancel() is True and ref.cancel() is False
    with pytest.raises(consumer.TaskCancelledError):
        ref.result(timeout_s=1)


@pytest.mark.parametrize(
    ("payloads", "message"),
    [
        ([{"a": 1}], "payloads[0] does not fit task 'math.add': missing ['b']"),
        ([{"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}], "payloads[1] does not fit"),
        ([{"a": 1, "b": math.nan}], "payloads[0] cannot be JSON"),
        ([{"a": 2**70, "b": 1}], "payloads[0] cannot be UTF-8 JSON"),
        ([{"a": {1, 2}, "b": 1}], "payloads[0] cannot be UTF-8 JSON"),
        ([{"a": "\ud800", "b": 1}], "payloads[0] cannot be UTF-8 JSON"),
        ([{"a": "x" * 70_000, "b": 1}], "payloads[0] is over 65536 bytes"),
    ],
)
def test_payload_mistakes_raise_in_the_caller_and_write_nothing(
    configured: redis.Redis, payloads: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(PayloadError) as raised:
        e2e_tasks.add.send_many(payloads)
    assert str(raised.value).startswith(message)
    assert configured.exists(STREAM) == 0  # all or nothing: nothing


def test_a_send_past_the_backlog_raises_and_writes_nothing(
    configured: redis.Redis,
) -> None:
    e2e_tasks.add.send_many([{"a": n, "b": n} for n in range(50)])  # exactly full
    with pytest.raises(consumer.BacklogFullError, match="50 entries wait"):
        e2e_tasks.add.send(a=1, b=1)
    with pytest.raises(consumer.BacklogFullError):
        consumer.send_task("math.add", {"a": 1, "b": 1}, idempotency_key="k")
    assert configured.xlen(STREAM) == 50
    assert not configured.keys("{tasks}:idem:*")  # the refusal recorded nothing


def test_redis_down_raises_and_nothing_connects_at_import(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    api.configure(SenderSettings(redis=RedisSettings(url=nowhere, cluster=False)))
    try:
        with pytest.raises(redis.ConnectionError):
            e2e_tasks.add.send(a=1, b=2)
    finally:
        api.sender().close()


def test_a_program_without_the_environment_configures_its_own(
    redis_url: str, r: redis.Redis
) -> None:
    queue = Queue(stream="jobs{q}", group="g", dead_letter_stream="jobs{q}:dead")
    settings = SenderSettings(redis=RedisSettings(url=redis_url), queue=queue)
    api.configure(settings)
    try:
        ref = consumer.send_task("math.add", {"a": 1, "b": 2})
        [(entry_id, fields)] = entries(r, "jobs{q}")
        assert (entry_id, fields["task"]) == (ref.id, "math.add")
        assert json.loads(fields["payload"]) == {"a": 1, "b": 2}
        eventually(lambda: ref.status()["state"] == "queued")
    finally:
        api.sender().close()
