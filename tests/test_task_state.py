"""A task's state by its ID, through every state, and cancellation, against a real Redis
and the real worker loop (pipeline_core/task_state.py)."""

import time
from typing import Any

import pytest
import redis

from pipeline_core import task_state
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.task_state import InvalidTaskIdError, TaskStatus
from pipeline_core.timing import make_timing
from tests.conftest import eventually
from tests.factories import DELAYED, QUEUE, STREAM, add_entry, deliver_to, make_worker


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
    worker = make_worker(r, TASKS, max_deliveries=2, retry_backoff_s=0.05)
    task_id = add_entry(r, "boom")
    worker.poll_once()  # the first attempt fails: re-queued after its backoff
    first = status(r, task_id)
    assert (first["state"], first["error"], first["attempts"]) == (
        "retrying", "RuntimeError: boom", 1
    )  # fmt: skip
    assert first["next_attempt_at"] >= first["enqueued_at"]
    eventually(lambda: worker.clock.tick() or r.zcard(DELAYED) == 0)
    promoted = status(r, task_id)
    assert (promoted["state"], promoted["id"]) == ("queued", task_id)
    assert promoted["entry_id"] != task_id  # a new entry, the same task
    worker.poll_once()  # the second attempt fails too: out of attempts
    dead = status(r, task_id)
    assert (dead["state"], dead["deliveries"], dead["task"]) == ("dead", 2, "boom")
    assert "RuntimeError: boom" in dead["error"] and dead["dead_letter_id"]


def test_a_retried_delivery_reads_running(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, max_deliveries=3, retry_backoff_s=0.01)
    task_id = add_entry(r, "boom")
    worker.poll_once()
    eventually(lambda: worker.clock.tick() or r.zcard(DELAYED) == 0)
    deliver_to(r, "pod-c", count=1)  # another consumer took the retry
    running = status(r, task_id)
    assert (running["state"], running["consumer"], running["attempts"]) == (
        "running", "pod-c", 1
    )  # fmt: skip


def test_a_delayed_task_is_delayed_then_queued_and_can_be_cancelled(
    r: redis.Redis,
) -> None:
    worker = make_worker(r, TASKS)
    sender = Sender(SenderSettings(), client=r)
    soon = sender.send("record", {"n": 1}, timing=make_timing(countdown_s=0.2))
    later = sender.send("record", {"n": 2}, timing=make_timing(countdown_s=3600))
    waiting = status(r, soon.id)
    assert (waiting["state"], waiting["task"]) == ("delayed", "record")
    assert waiting["due_at"] > waiting["enqueued_at"]
    assert cancel(r, later.id).cancelled_now
    assert status(r, later.id)["state"] == "cancelled"
    assert r.zcard(DELAYED) == 1  # the cancelled one left the delayed set
    eventually(lambda: worker.clock.tick() or r.zcard(DELAYED) == 0, timeout_s=5)
    worker.poll_once()
    assert RUNS == [{"n": 1}]
    assert status(r, soon.id)["state"] == "succeeded"


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


def test_a_task_waiting_to_retry_is_cancelled_and_never_runs_again(
    r: redis.Redis,
) -> None:
    worker = make_worker(r, TASKS, max_deliveries=5, retry_backoff_s=0.05)
    task_id = add_entry(r, "boom")
    worker.poll_once()
    assert cancel(r, task_id).cancelled_now
    time.sleep(0.1)
    worker.clock.tick()
    assert worker.poll_once() == 0  # nothing was promoted: it was cancelled
    assert status(r, task_id)["state"] == "cancelled"


def test_an_expired_task_is_acknowledged_unrun(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    sender = Sender(SenderSettings(), client=r)
    ref = sender.send("record", {"n": 1}, timing=make_timing(expires_s=0.05))
    time.sleep(0.1)
    worker.poll_once()
    assert RUNS == [] and status(r, ref.id)["state"] == "expired"
    counted = worker.metrics.registry.get_sample_value(
        "consumer_messages_total", {"task": "record", "outcome": "expired"}
    )
    assert counted == 1


def test_unknown_and_malformed_ids(r: redis.Redis) -> None:
    assert task_state.status(r, QUEUE, "1-0") is None
    assert task_state.cancel(r, QUEUE, "1-0") is None
    wrong_ids = ("", "abc", "1-", "-1", "1-2-3", "1" * 21 + "-0", "1-0\n", f"0-{2**64}")
    for wrong in wrong_ids:
        with pytest.raises(InvalidTaskIdError, match="milliseconds"):
            task_state.status(r, QUEUE, wrong)
