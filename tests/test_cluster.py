"""The pipeline on a real local Redis Cluster (3 masters, created once per run by the
harness): every key of the queue in the stream's slot, so the result+XACK MULTI and
the Lua scripts run; then the whole story with real processes."""

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from cli.__main__ import main as pipeline
from harness.redis_server import LocalCluster
from harness.stack import Stack
from pipeline_core import task_state
from pipeline_core.keys import slot
from pipeline_core.redis_settings import RedisSettings
from pipeline_core.replies import FAILURES, reason
from pipeline_core.sending import Sender, SenderSettings
from tests.conftest import eventually
from tests.factories import (
    DEAD,
    QUEUE,
    STREAM,
    add_entry,
    call,
    dead_letters,
    deliver_to,
    drained,
    make_worker,
    pending,
    result_of,
)

pytestmark = pytest.mark.timeout(120)


def test_cluster_redirections_and_refusals_are_a_cluster_outage() -> None:
    """redis-py drops the MOVED/ASK prefix from the message: known by class."""
    errors = redis.exceptions
    for error in (errors.MovedError("3999 127.0.0.1:7001"),
                  errors.AskError("3999 127.0.0.1:7001"), errors.TryAgainError(""),
                  errors.ClusterDownError("The cluster is down"),
                  errors.MasterDownError(""), errors.ClusterError("TTL exhausted."),
                  redis.ResponseError("CLUSTERDOWN Hash slot not served"),
                  errors.SlotNotCoveredError("no node serves slot 3999")):  # fmt: skip
        assert reason(error) == "cluster", error
        # Every loop that outlives outages catches it, though a slot no node serves
        # (mid-failover, mid-resharding) raises no RedisError in redis-py.
        assert isinstance(error, FAILURES)


def test_cluster_keys_of_the_queue_share_one_slot(rc: RedisCluster) -> None:
    keys = [STREAM, DEAD, QUEUE.results_key("1-0"), QUEUE.results_key("9999999999-0")]
    assert {slot(key) for key in keys} == {rc.cluster_keyslot(STREAM)}


def test_cluster_worker_stores_acks_dead_letters_claims_and_trims(
    rc: RedisCluster,
) -> None:
    def fails() -> None:
        raise RuntimeError("no")

    worker = make_worker(rc, {"echo": lambda x: x, "fails": fails}, max_deliveries=1)
    ok, bad = add_entry(rc, "echo", {"x": 1}), add_entry(rc, "fails")
    crashed = add_entry(rc, "echo", {"x": 2})
    assert worker.poll_once() == 3
    # Pending list: empty; one result (MULTI across the stream and its results hash)
    # and one dead letter (the Lua script with both keys in KEYS).
    assert json.loads(result_of(rc, ok) or "null") == 1
    assert [d["source_id"] for d in dead_letters(rc)] == [bad]
    assert json.loads(result_of(rc, crashed) or "null") == 2
    lost = add_entry(rc, "echo", {"x": 3})
    deliver_to(rc, "gone")  # a consumer that dies holding it
    heir = make_worker(rc, {"echo": lambda x: x}, consumer_name="heir")
    eventually(lambda: heir.poll_once() == 1, timeout_s=5)  # claimed once idle
    assert json.loads(result_of(rc, lost) or "null") == 3
    assert pending(rc) == []
    heir.trim_when_due()
    assert rc.xlen(STREAM) <= 1


def test_cluster_task_states_cancel_and_python_sends(
    rc: RedisCluster, cluster: LocalCluster
) -> None:
    """Status through the states, a cancel, and the Python API's send script (backlog,
    idempotency record, entries: one slot) on the cluster."""

    def fails() -> None:
        raise RuntimeError("no")

    def echo(x: object) -> object:
        return x

    worker = make_worker(
        rc, {"echo": echo, "fails": fails}, max_deliveries=2, claim_idle_ms=60_000
    )
    sender = Sender(SenderSettings(redis=RedisSettings(url=cluster.url, cluster=True)))
    try:
        [ok, cancelled] = [ref.id for ref in sender.send_many("echo", [{"x": 1}] * 2)]
        bad = sender.send("fails", {}, idempotency_key="k1").id
        assert sender.send("fails", {}, idempotency_key="k1").id == bad  # replayed
        state = {i: task_state.status(rc, QUEUE, i) for i in (ok, cancelled, bad)}
        assert {found.state for found in state.values() if found} == {"queued"}
        cancel = task_state.cancel(rc, QUEUE, cancelled)
        assert cancel is not None and cancel.cancelled_now
        worker.poll_once()
        after = {i: task_state.status(rc, QUEUE, i) for i in (ok, cancelled, bad)}
        assert {i: found.state for i, found in after.items() if found} == {
            ok: "succeeded", cancelled: "cancelled", bad: "retrying"
        }  # fmt: skip
    finally:
        sender.close()


@pytest.fixture
def stack(cluster: LocalCluster, rc: RedisCluster, tmp_path: Path) -> Iterator[Stack]:
    """The dispatcher and two consumers against the cluster, which they detect."""
    env = {"CLAIM_IDLE_MS": "500", "CLAIM_INTERVAL_MS": "50", "BLOCK_MS": "100",
           "MAX_DELIVERIES": "2", "TASK_MODULES": "tests.e2e_tasks",
           "TRIM_INTERVAL_MS": "100"}  # fmt: skip
    started = Stack(tmp_path, consumers=2, consumer_env=env, redis_url=cluster.url)
    started.start()
    yield started
    started.stop()


def test_cluster_end_to_end_story(
    stack: Stack,
    rc: RedisCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = stack.base_url
    # Dispatch, consume, results.
    status, body = call(f"{base}/dispatch", {"num_messages": 10})
    assert status == 202
    eventually(lambda: drained(rc, 10), timeout_s=30)
    assert call(f"{base}/results/{body['entry_ids'][3]}") == (
        200, {"entry_id": body["entry_ids"][3], "result": {"seq": 3}},
    )  # fmt: skip
    # Tasks for later: moved onto the stream by the consumers' clocks; one cancelled.
    _, later = call(f"{base}/dispatch", {"num_messages": 2, "countdown": 0.5})
    _, far = call(f"{base}/dispatch", {"num_messages": 1, "countdown": 3600})
    [far_id] = far["task_ids"]
    assert call(f"{base}/tasks/{far_id}")[1]["state"] == "delayed"
    cancelled = task_state.cancel(rc, QUEUE, far_id)
    assert cancelled is not None and cancelled.cancelled_now
    eventually(lambda: drained(rc, 12), timeout_s=30)
    for task_id in later["task_ids"]:
        assert call(f"{base}/tasks/{task_id}")[1]["state"] == "succeeded"
    assert call(f"{base}/tasks/{far_id}")[1]["state"] == "cancelled"
    # A failing task ends in the dead-letter stream; the CLI replays it.
    _, failed = call(f"{base}/dispatch", {"task": "explode", "payloads": [{"x": 1}]})
    eventually(lambda: rc.xlen(DEAD) == 1, timeout_s=30)
    monkeypatch.setenv("REDIS_URL", stack.url)
    assert pipeline(["dead", "replay", "--all", "--json"]) == 0
    [moved] = json.loads(capsys.readouterr().out)
    assert rc.xlen(DEAD) == 0 and rc.exists(STREAM)
    eventually(lambda: rc.xlen(DEAD) == 1, timeout_s=30)  # it fails again, of course
    [letter] = dead_letters(rc)
    # The task keeps its ID across its retries and the replay (its own entries change).
    assert letter["id"] == failed["task_ids"][0] != moved["entry_id"]
    assert letter["source_id"] not in (failed["entry_ids"][0], moved["entry_id"])
    # SIGKILL of a consumer mid-task: its entries are reclaimed by the other.
    payloads = [{"n": n, "seconds": 0.2} for n in range(6)]
    _, slow = call(f"{base}/dispatch", {"task": "slow", "payloads": payloads})
    eventually(lambda: pending(rc), timeout_s=10)
    victim = pending(rc)[0]["consumer"]
    stack.consumers[victim].signal(signal.SIGKILL)
    # 10, 2 for later, the failing task and its retry, its replay and the replay's
    # retry, 6 slow.
    eventually(lambda: drained(rc, 10 + 2 + 2 + 2 + 6), timeout_s=60)
    results = [call(f"{base}/results/{i}")[1]["result"] for i in slow["entry_ids"]]
    assert results == list(range(6))
    # Trimming keeps only what the group still needs.
    eventually(lambda: rc.xlen(STREAM) <= 1, timeout_s=10)
    # pipeline status and the metrics read the same state.
    assert pipeline(["status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["lag"], state["pending"], state["dead_letters"]) == (0, 0, 1)
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "pipeline_stream_state_up 1.0" in text
    assert "pipeline_dead_letter_length 1.0" in text
    assert 'dispatcher_messages_total{outcome="accepted"} 20.0' in text
    assert "pipeline_delayed_tasks 0.0" in text
