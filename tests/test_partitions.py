"""PARTITIONS: one queue over several streams. The rules (names, slots, task IDs,
spreading), a consumer's turns over partitions on a real Redis, and the whole story
with real processes on a real local Redis Cluster (3 masters, each with a replica)."""

import collections
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from cli.__main__ import main as pipeline
from consumer.rotation import rotate
from consumer.worker import Worker
from dispatcher.app import create_app
from dispatcher.settings import Settings
from dispatcher.wsgi import connect_dispatcher
from harness.redis_server import LocalCluster
from harness.stack import Stack
from harness.topology import move_slot, owner
from pipeline_core.delayed import delayed_key, delayed_tasks_key
from pipeline_core.env import SettingsError
from pipeline_core.keys import Queue, queue_from_env, slot
from pipeline_core.partitions import locate, of_key, parts, spread, task_id
from pipeline_core.redis_settings import RedisSettings
from pipeline_core.send_script import idempotency_record
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.task_state import InvalidTaskIdError
from tests.conftest import eventually
from tests.factories import FAST_CONSUMER, call, make_settings

pytestmark = pytest.mark.timeout(120)

P6 = Queue(partitions=6)


def test_partition_streams_spread_over_the_slot_ranges_and_keep_their_keys() -> None:
    queues = parts(P6)
    # `redis-cli --cluster create` gives 3 masters a third of the slots each.
    assert [slot(q.stream) * 3 // 16384 for q in queues] == [0, 0, 1, 1, 2, 2]
    assert [q.stream.split(":")[1].split(".")[0] for q in queues] == list("012345")
    for q in queues:
        keys = [q.dead_letter_stream, q.results_key("1-0"), delayed_key(q),
                delayed_tasks_key(q), idempotency_record(q, "s", "k"),
                q.audit_key]  # fmt: skip
        assert {slot(key) for key in keys} == {slot(q.stream)}
        assert q.partitions == 1 and q.group == P6.group
    assert len({q.stream for q in queues}) == 6
    assert parts(Queue()) == (Queue(),)  # PARTITIONS=1: the queue as always


def test_task_ids_name_their_partition_and_are_checked() -> None:
    assert task_id(P6, 3, "17-0") == "p3-17-0"
    assert task_id(Queue(), 0, "17-0") == "17-0"
    assert locate(P6, "p3-17-0") == (3, parts(P6)[3], "17-0")
    assert locate(Queue(), "17-0") == (0, Queue(), "17-0")
    for wrong in ("p6-17-0", "17-0", "p1-x", "p01", "p-1-17-0", "p1-17-0-"):
        with pytest.raises(InvalidTaskIdError):
            locate(P6, wrong)
    with pytest.raises(InvalidTaskIdError):
        locate(Queue(), "p3-17-0")


def test_spread_is_round_robin_and_a_partition_key_always_lands_alike() -> None:
    assert spread(7, 5, 3) == {0: [1, 4], 1: [2, 5], 2: [0, 3, 6]}
    assert spread(2, 0, 6) == {0: [0], 1: [1]}
    assert of_key("user-1", 6) == of_key("user-1", 6)
    landed = collections.Counter(of_key(f"user-{n}", 6) for n in range(600))
    assert set(landed) == set(range(6)) and min(landed.values()) > 60


def test_partitions_setting_is_checked() -> None:
    assert queue_from_env({"PARTITIONS": "6"}).partitions == 6
    assert queue_from_env({}).partitions == 1
    for env in ({"PARTITIONS": "0"}, {"PARTITIONS": "65"}, {"PARTITIONS": "two"},
                {"PARTITIONS": "2", "STREAM": "app{q1}"},
                {"PARTITIONS": "2", "DEAD_LETTER_STREAM": "elsewhere"}):  # fmt: skip
        with pytest.raises(SettingsError, match="PARTITIONS"):
            queue_from_env(env)


def test_a_consumer_serves_a_small_partition_while_a_big_one_has_work(
    r: redis.Redis,
) -> None:
    """Turns: the one task of partition 1 runs while partition 0's 20 wait, not after
    them (adaptive read sizes: each turn takes about 50 ms of work)."""
    finished: list[tuple[int, float]] = []

    def nap(part: int) -> None:
        time.sleep(0.05)
        finished.append((part, time.monotonic()))

    stopping = threading.Event()
    queues = parts(Queue(partitions=2))
    workers = [
        Worker(r, make_settings(queue=q, batch_size=None, block_ms=50), {"nap": nap},
               stopping=stopping, partition=index)
        for index, q in enumerate(queues)
    ]  # fmt: skip
    for worker in workers:
        worker.ensure_group()
    for _ in range(20):
        r.xadd(queues[0].stream, {"task": "nap", "payload": json.dumps({"part": 0})})
    r.xadd(queues[1].stream, {"task": "nap", "payload": json.dumps({"part": 1})})
    thread = threading.Thread(target=rotate, args=(workers, stopping))
    thread.start()
    try:
        eventually(lambda: len(finished) == 21, timeout_s=30)
    finally:
        stopping.set()
        thread.join(timeout=10)
    order = [part for part, _ in finished]
    assert order.index(1) <= 3, order  # after at most 3 of partition 0's 20


def test_a_request_over_partitions_is_refused_whole_or_completed_by_its_key(
    r: redis.Redis, redis_url: str
) -> None:
    """A refusal writes nothing in any partition; a partition's write refused by Redis
    after earlier partitions' answers 503 naming what was written, and the retry with
    the same Idempotency-Key writes only the rest (a real refusal: a user that may
    read partition 2's keys but not write them)."""
    q3 = Queue(partitions=3)
    queues = parts(q3)
    body = {"task": "demo", "payloads": [{"n": n} for n in range(6)]}
    full = Settings(redis=RedisSettings(url=redis_url), queue=q3, allow_anonymous=True)
    full_app = create_app(full, connect_dispatcher(full)).test_client()
    refused = create_app(replace(full, max_backlog=5), connect_dispatcher(full))
    assert refused.test_client().post("/dispatch", json=body).status_code == 429
    assert [r.exists(q.stream) for q in queues] == [0, 0, 0]  # nothing anywhere
    keys = [f"~{q.stream}*" for q in queues[:2]] + [f"%R~{queues[2].stream}*"]
    r.acl_setuser("two", enabled=True, passwords=["+two-secret"], keys=keys,
                  commands=["+@all"])  # fmt: skip
    try:
        url = redis_url.replace("redis://", "redis://two:two-secret@")
        partial = replace(full, redis=RedisSettings(url=url))
        first = (
            create_app(partial, connect_dispatcher(partial))
            .test_client()
            .post("/dispatch", json=body, headers={"Idempotency-Key": "k6"})
        )
        answer = first.get_json()
        assert (first.status_code, answer["error"]) == (503, "partly written"), answer
        written = answer["written_task_ids"]
        assert sorted(locate(q3, t)[0] for t in written) == [0, 0, 1, 1]
        assert "same Idempotency-Key" in answer["retry"]
        retry = full_app.post("/dispatch", json=body, headers={"Idempotency-Key": "k6"})
        task_ids = retry.get_json()["task_ids"]
        assert retry.status_code == 202 and set(written) < set(task_ids)
        assert [r.xlen(q.stream) for q in queues] == [2, 2, 2]  # each message once
    finally:
        r.acl_deluser("two")


def _post(base: str, body: object, key: str | None = None) -> tuple[int, Any, str]:
    request = urllib.request.Request(
        f"{base}/dispatch", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            replayed = answer.headers.get("Idempotent-Replayed", "")
            return answer.status, json.loads(answer.read()), replayed
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), ""


@pytest.fixture
def replicated(cluster: LocalCluster, rc: RedisCluster) -> LocalCluster:
    """The run's cluster (3 masters, each with a replica), emptied."""
    return cluster


@pytest.fixture
def stack6(replicated: LocalCluster, tmp_path: Path) -> Iterator[Stack]:
    env = {**FAST_CONSUMER, "PARTITIONS": "6", "MAX_DELIVERIES": "3",
           "TASK_MODULES": "tests.e2e_tasks"}  # fmt: skip
    started = Stack(tmp_path, consumers=2, consumer_env=env, redis_url=replicated.url,
                    dispatcher_env={"PARTITIONS": "6"})  # fmt: skip
    started.start()
    yield started
    started.stop()


def _read(rc: RedisCluster, index: int) -> int:
    """Entries partition `index`'s group read, 0 if none yet; -1 while any pends."""
    stream = parts(P6)[index].stream
    groups = rc.xinfo_groups(stream) if rc.exists(stream) else []
    if not groups:
        return 0
    return -1 if groups[0]["pending"] else int(groups[0]["entries-read"] or 0)


def test_partitioned_queue_on_a_cluster_end_to_end(
    stack6: Stack,
    replicated: LocalCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rc = replicated.client()
    base = stack6.base_url
    assert len({_master_of(replicated, q.stream) for q in parts(P6)}) == 3
    # Round-robin: 600 messages, 100 to each partition, all run.
    status, body, _ = _post(base, {"num_messages": 600})
    assert status == 202 and collections.Counter(body["partitions"]) == {
        index: 100 for index in range(6)
    }  # fmt: skip
    named = zip(body["task_ids"], body["partitions"], body["entry_ids"], strict=True)
    assert all(t == f"p{i}-{e}" for t, i, e in named)
    eventually(lambda: [_read(rc, i) for i in range(6)] == [100] * 6, timeout_s=60)
    sample = body["task_ids"][:6]
    assert [call(f"{base}/results/{t}")[1]["result"] for t in sample] == [
        {"seq": n} for n in range(6)
    ]  # fmt: skip
    assert call(f"{base}/tasks/{sample[0]}")[1]["state"] == "succeeded"
    assert call(f"{base}/tasks/{sample[0]}")[1]["id"] == sample[0]
    assert call(f"{base}/tasks/{body['entry_ids'][0]}")[0] == 400  # no partition
    # A partition key: every message to one partition, in order.
    status, keyed, _ = _post(base, {"num_messages": 30, "partition_key": "user-7"})
    assert status == 202 and set(keyed["partitions"]) == {of_key("user-7", 6)}
    assert keyed["entry_ids"] == sorted(keyed["entry_ids"], key=_id_order)
    # An Idempotency-Key: a retry writes nothing and answers the same task IDs.
    once = {"task": "math.add", "payloads": [{"a": n, "b": 1} for n in range(12)]}
    first = _post(base, once, key="order-1")
    again = _post(base, once, key="order-1")
    assert first[0] == again[0] == 202 and again[2] == "true"
    assert first[1]["task_ids"] == again[1]["task_ids"]
    assert len(set(first[1]["partitions"])) == 6
    # SIGKILL of a consumer holding slow tasks: the other reclaims them.
    slow = [{"n": n, "seconds": 0.3} for n in range(12)]
    _, slow_body, _ = _post(base, {"task": "slow", "payloads": slow})
    eventually(lambda: any(_read(rc, i) == -1 for i in range(6)), timeout_s=10)
    victim = sorted(stack6.live_consumers())[0]
    stack6.consumers[victim].signal(signal.SIGKILL)

    def results() -> list[Any]:  # from Redis: HTTP lookups are rate-limited
        located = [locate(P6, t) for t in slow_body["task_ids"]]
        found = [rc.hget(q.results_key(e), e) for _, q, e in located]
        return [json.loads(stored) if stored else None for stored in found]

    eventually(lambda: results() == list(range(12)), timeout_s=60)
    # pipeline status: totals and each partition.
    monkeypatch.setenv("REDIS_URL", replicated.url)
    monkeypatch.setenv("PARTITIONS", "6")
    eventually(lambda: all(_read(rc, i) > 0 for i in range(6)), timeout_s=30)
    assert pipeline(["status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["lag"], state["pending"], state["dead_letters"]) == (0, 0, 0)
    assert [p["stream"] for p in state["partitions"]] == [q.stream for q in parts(P6)]
    # The metrics: a series per partition.
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    for index in range(6):
        assert f'pipeline_group_lag{{partition="{index}"}} 0.0' in text
    rc.close()


def test_python_sends_spread_over_partitions_on_a_cluster(
    cluster: LocalCluster, rc: RedisCluster
) -> None:
    queue = Queue(partitions=6)
    settings = SenderSettings(
        redis=RedisSettings(url=cluster.url, cluster=True), queue=queue
    )
    workers = [
        Worker(rc, make_settings(queue=q), {"add": lambda a, b: a + b}, partition=i)
        for i, q in enumerate(parts(queue))
    ]
    sender = Sender(settings)
    try:
        refs = sender.send_many("add", [{"a": n, "b": 1} for n in range(12)])
        assert sorted(locate(queue, ref.id)[0] for ref in refs) == sorted(
            list(range(6)) * 2
        )
        again = sender.send_many("add", [{"a": 0, "b": 0}] * 3, idempotency_key="k")
        assert [r.id for r in again] == [
            r.id for r in sender.send_many("add", [{"a": 0, "b": 0}] * 3,
                                           idempotency_key="k")
        ]  # fmt: skip
        for worker in workers:
            worker.ensure_group()
            worker.poll_once()
        assert [ref.result(timeout_s=10) for ref in refs] == list(range(1, 13))
        assert refs[0].status()["id"] == refs[0].id
        assert sender.task(refs[1].id).status()["state"] == "succeeded"
    finally:
        sender.close()


# Every write path of POST /dispatch: MULTI, paced, the send script (later; with a key).
WRITES: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"task": "demo", "payloads": [{"n": n} for n in range(8)]}, {}),
    ({"num_messages": 2, "delay": 0.01}, {}),
    ({"task": "demo", "payloads": [{"n": 1}, {"n": 2}], "countdown": 60}, {}),
    ({"task": "demo", "payloads": [{"n": 1}, {"n": 2}]}, {"Idempotency-Key": "k-1"}),
]


def test_wait_on_a_cluster_confirms_each_partition_on_its_own_master(
    replicated: LocalCluster,
) -> None:
    """MIN_REPLICAS_ACKED on a cluster: each partition's write waits on its master's
    connection. Each master has one replica: WAIT 1 confirms, WAIT 2 cannot. A slot
    moved away answers MOVED to the write (503) at most once: the next goes to the
    slot's new master."""

    def app(replicas: int) -> Any:
        settings = Settings(
            redis=RedisSettings(url=replicated.url, cluster=True), queue=P6,
            allow_anonymous=True, min_replicas_acked=replicas,
            replica_ack_timeout_ms=100,
        )  # fmt: skip
        return create_app(settings, connect_dispatcher(settings)).test_client()

    one, two = app(1), app(2)
    for body, headers in WRITES:
        answer = one.post("/dispatch", json=body, headers=headers)
        assert answer.status_code == 202, answer.get_json()
        again = {name: f"{value}-2" for name, value in headers.items()}
        refused = two.post("/dispatch", json=body, headers=again)
        assert refused.status_code == 503, refused.get_json()
        assert refused.get_json()["error"] in ("not confirmed on replicas",
                                               "partly written")  # fmt: skip
    # The partition of "user-7" moves to another master under the dispatcher.
    moved = parts(P6)[of_key("user-7", 6)].stream
    target = owner(replicated, slot(parts(P6)[(of_key("user-7", 6) + 2) % 6].stream))
    move_slot(replicated, slot(moved), target)
    keyed = {"task": "demo", "payloads": [{"n": 1}], "partition_key": "user-7"}
    statuses = [one.post("/dispatch", json=keyed).status_code for _ in range(3)]
    assert statuses in ([202] * 3, [503, 202, 202]), statuses
    with target.client() as node:
        assert node.xlen(moved) >= statuses.count(202)


def _master_of(cluster: LocalCluster, key: str) -> int:
    """The port of the master serving the key's slot (CLUSTER SLOTS)."""
    with cluster.nodes[0].client() as node:
        ranges = node.execute_command("CLUSTER SLOTS")
    return next(int(master[1]) for low, high, master, *_ in ranges
                if int(low) <= slot(key) <= int(high))  # fmt: skip


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)
