"""A task's state by its ID, through every state, and cancellation, against a real Redis
and the real worker loop (pipeline_core/task_state.py)."""

import time
from typing import Any

import pytest
import redis

from pipeline_core import task_state
from pipeline_core.task_state import InvalidTaskIdError, TaskStatus
from tests.factories import QUEUE, STREAM, add_entry, deliver_to, make_worker


def status(r: redis.Redis, task_id: str) -> dict[str, Any]:
    found = task_state.status(r, QUEUE, task_id)
    assert found is not None, task_id
    return found.as_json()


def cancel(r: redis.Redis, task_id: str) -> TaskStatus:
    found = task_state.cancel(r, QUEUE, task_id)
    assert found is not None, task_id
    return found


RUNS: list[dict[str, Any]] = []


def record(**payload: Any) -> dict[str, Any]:
    RUNS.append(payload)
    return {"ok": True}


def boom(**payload: Any) -> None:
    raise RuntimeError("boom")


TASKS = {"record": record, "boom": boom}


@pytest.fixture(autouse=True)
def no_runs() -> None:
    RUNS.clear()


def test_queued_then_running_then_succeeded_with_its_result(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, claim_idle_ms=60_000)
    task_id = add_entry(r, "record", {"n": 1})
    queued = status(r, task_id)
    assert (queued["id"], queued["task"], queued["state"]) == (
        task_id,
        "record",
        "queued",
    )
    assert 0 <= queued["age_s"] < 30 and queued["enqueued_at"].endswith("Z")
    deliver_to(r, "pod-b", count=1)  # delivered, not finished: in pod-b's hands
    running = status(r, task_id)
    assert (running["state"], running["consumer"], running["deliveries"]) == (
        "running", "pod-b", 1
    )  # fmt: skip
    again = add_entry(r, "record", {"n": 2})
    worker.poll_once()  # reads the new one; pod-b's is not stale for a minute
    done = status(r, again)
    assert (done["state"], done["result"]) == ("succeeded", {"ok": True})


def test_a_failing_task_is_retrying_then_dead_with_its_error(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, max_deliveries=2, claim_idle_ms=20)
    task_id = add_entry(r, "boom")
    worker.poll_once()  # first attempt fails: left pending, recorded
    first = status(r, task_id)
    assert (first["state"], first["error"], first["deliveries"]) == (
        "retrying", "RuntimeError: boom", 1
    )  # fmt: skip
    time.sleep(0.05)  # past claim_idle_ms (20 ms): reclaimable
    worker.poll_once()  # the second attempt fails too: out of deliveries
    dead = status(r, task_id)
    assert (dead["state"], dead["deliveries"], dead["task"]) == ("dead", 2, "boom")
    assert "RuntimeError: boom" in dead["error"] and dead["dead_letter_id"]


def test_a_retried_delivery_reads_running_again(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, max_deliveries=3, claim_idle_ms=20)
    task_id = add_entry(r, "boom")
    worker.poll_once()
    assert status(r, task_id)["state"] == "retrying"
    time.sleep(0.05)
    r.xautoclaim(STREAM, QUEUE.group, "pod-c", 20, "0-0")  # another consumer took it
    running = status(r, task_id)
    assert (running["state"], running["consumer"], running["deliveries"]) == (
        "running", "pod-c", 2
    )  # fmt: skip


def test_a_cancelled_queued_task_never_runs_and_stays_cancelled(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    keep = add_entry(r, "record", {"n": "kept"})
    task_id = add_entry(r, "record", {"n": "cancelled"})
    answer = cancel(r, task_id)
    assert (answer.state, answer.cancelled_now) == ("cancelled", True)
    assert not cancel(r, task_id).cancelled_now  # a second cancel changes nothing
    worker.poll_once()
    assert RUNS == [{"n": "kept"}]  # the cancelled one was acknowledged unrun
    assert r.xpending(STREAM, QUEUE.group)["pending"] == 0
    assert r.zcard(QUEUE.key(task_state.CANCELS)) == 0  # the request was answered
    assert status(r, task_id)["state"] == "cancelled"
    assert status(r, keep)["state"] == "succeeded"
    registry = worker.metrics.registry
    counted = registry.get_sample_value(
        "consumer_messages_total", {"task": "record", "outcome": "cancelled"}
    )
    assert counted == 1


def test_a_running_or_finished_task_cannot_be_cancelled(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, claim_idle_ms=60_000)
    done = add_entry(r, "record")
    worker.poll_once()
    running = add_entry(r, "record")
    deliver_to(r, "pod-b", count=1)
    for task_id, state in ((done, "succeeded"), (running, "running")):
        answer = cancel(r, task_id)
        assert (answer.state, answer.cancelled_now) == (state, False)
    assert r.zcard(QUEUE.key(task_state.CANCELS)) == 0


def test_a_retrying_task_is_cancelled_and_its_reclaim_acks_it_unrun(
    r: redis.Redis,
) -> None:
    worker = make_worker(r, TASKS, max_deliveries=5, claim_idle_ms=20)
    task_id = add_entry(r, "boom")
    worker.poll_once()
    assert cancel(r, task_id).cancelled_now
    time.sleep(0.05)
    worker.poll_once()  # the reclaim finds the cancel request: no second attempt
    assert r.xpending(STREAM, QUEUE.group)["pending"] == 0
    assert status(r, task_id)["state"] == "cancelled"


def test_unknown_and_malformed_ids(r: redis.Redis) -> None:
    assert task_state.status(r, QUEUE, "1-0") is None
    assert task_state.cancel(r, QUEUE, "1-0") is None
    wrong_ids = ("", "abc", "1-", "-1", "1-2-3", "1" * 21 + "-0", "1-0\n", f"0-{2**64}")
    for wrong in wrong_ids:
        with pytest.raises(InvalidTaskIdError, match="milliseconds"):
            task_state.status(r, QUEUE, wrong)
