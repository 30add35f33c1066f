"""High availability with Redis Sentinel: the settings, WAIT after every write path
of POST /dispatch (on a real master with two replicas and three Sentinels), and a
`kill -9` of the master under load with real processes: 503s while there is no
master, never a 202 the failover loses, consumers carrying on, `pipeline status`.
(chaos/failover.py runs the same failover longer, with a control that loses work.)"""

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from cli.__main__ import main as pipeline
from consumer import settings as consumer_settings
from dispatcher import settings as dispatcher_settings
from dispatcher.app import create_app
from dispatcher.settings import Settings
from dispatcher.wsgi import connect_dispatcher
from harness.redis_server import SHIPPED
from harness.sentinel import DOWN_AFTER_MS, MASTER_NAME, LocalSentinel
from harness.stack import Stack
from pipeline_core.env import SettingsError
from pipeline_core.redis_settings import RedisSettings, redis_from_env
from pipeline_core.replication import NotReplicatedError, Replicas
from pipeline_core.sending import Sender, SenderSettings, replicas_from_env
from pipeline_core.timing import Timing
from tests.conftest import eventually, require_redis_server
from tests.factories import QUEUE, STREAM

pytestmark = pytest.mark.timeout(90)

PASSWORD = "sentinel-password-for-tests"
PROCESSES = {
    "dispatcher": lambda env: (
        dispatcher_settings.from_env(
            {"DISPATCH_ALLOW_ANONYMOUS": "1", "HOST": "127.0.0.1", **env}
        ).redis
    ),
    "consumer": lambda env: consumer_settings.from_env(env).redis,
    "core": redis_from_env,
}


def test_sentinel_settings_name_the_sentinels_the_master_and_their_password(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text("s3cret\n")
    env = {"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380,sentinel-2:5000"}
    env |= {
        "REDIS_SENTINEL_MASTER": "queue",
        "REDIS_SENTINEL_PASSWORD_FILE": str(secret),
    }
    settings = redis_from_env(env)
    assert settings.sentinels == (
        ("10.0.0.1", 26379), ("::1", 26380), ("sentinel-2", 5000)
    )  # fmt: skip
    assert (settings.sentinel_master, settings.sentinel_password) == ("queue", "s3cret")
    assert settings.cluster is False  # never asked: Sentinel watches a single master
    assert redis_from_env({}).sentinels == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "a:1"}, "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "q"}, "REDIS_SENTINEL_MASTER and REDIS_SENTINEL_"),
        ({"REDIS_SENTINEL_PASSWORD": "x"}, "REDIS_SENTINEL_MASTER and REDIS_SENTINEL_"),
        ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "q",
          "REDIS_CLUSTER": "1"}, "REDIS_CLUSTER=1 cannot go with REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "sentinel"}, "REDIS_SENTINELS must be host:port pairs"),
        ({"REDIS_SENTINELS": "a:1,,b:2"}, "REDIS_SENTINELS must be host:port pairs"),
        ({"REDIS_SENTINELS": "a:0"}, "REDIS_SENTINELS must be host:port pairs"),
        ({"REDIS_SENTINELS": "a:65536"}, "REDIS_SENTINELS must be host:port pairs"),
        ({"REDIS_SENTINELS": ":26379"}, "REDIS_SENTINELS must be host:port pairs"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_every_process_refuses_a_bad_sentinel_combination_naming_it(
    process: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        PROCESSES[process](env)
    assert str(refused.value).startswith(message)


def test_dispatcher_reads_how_many_replicas_a_202_waits_for() -> None:
    def read(**env: str) -> Settings:
        return dispatcher_settings.from_env(
            {"DISPATCH_ALLOW_ANONYMOUS": "1", "HOST": "127.0.0.1", **env}
        )

    defaults = read()
    assert (defaults.min_replicas_acked, defaults.replica_ack_timeout_ms) == (0, 1000)
    assert defaults.replicas is None  # answered once the master has the entries
    chosen = read(MIN_REPLICAS_ACKED="2", REPLICA_ACK_TIMEOUT_MS="250")
    assert chosen.replicas == Replicas(2, 250)
    # On a Redis Cluster each partition's write waits on its own master's connection.
    on_cluster = read(MIN_REPLICAS_ACKED="1", REDIS_CLUSTER="1", PARTITIONS="6")
    assert on_cluster.replicas == Replicas(1, 1000) and on_cluster.redis.cluster
    for env, message in [
        ({"MIN_REPLICAS_ACKED": "-1"}, "MIN_REPLICAS_ACKED must be between 0 and 100"),
        ({"REPLICA_ACK_TIMEOUT_MS": "0"}, "REPLICA_ACK_TIMEOUT_MS must be between 1"),
        ({"MIN_REPLICAS_ACKED": "1", "REPLICA_ACK_TIMEOUT_MS": "5000"},
         "REPLICA_ACK_TIMEOUT_MS (5000) must be under SOCKET_TIMEOUT_S (5 s)"),
    ]:  # fmt: skip
        with pytest.raises(SettingsError) as refused:
            read(**env)
        assert str(refused.value).startswith(message)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A master, two replicas and three Sentinels (with a password) for the tests
    that dispatch in-process; the failover test starts its own."""
    require_redis_server()
    started = LocalSentinel(tmp_path_factory.mktemp("sentinel"), password=PASSWORD)
    yield started.start()
    started.stop()


@pytest.fixture
def master(topology: LocalSentinel) -> Iterator[redis.Redis]:
    client = topology.client()
    client.flushall()
    yield client
    client.close()


def sentinel_settings(topology: LocalSentinel) -> RedisSettings:
    return redis_from_env({"REDIS_URL": topology.url, **topology.env})


def dispatcher(topology: LocalSentinel, replicas: int) -> FlaskClient:
    """The app on the dispatcher's own client (no retries), found through Sentinel,
    waiting for `replicas` replicas at most 100 ms."""
    settings = Settings(
        redis=sentinel_settings(topology), allow_anonymous=True,
        min_replicas_acked=replicas, replica_ack_timeout_ms=100,
    )  # fmt: skip
    return create_app(settings, connect_dispatcher(settings)).test_client()


# Every write path of POST /dispatch: MULTI, paced, the send script (later; with a key).
WRITES: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"task": "demo", "payloads": [{"n": 1}, {"n": 2}]}, {}),
    ({"num_messages": 2, "delay": 0.01}, {}),
    ({"task": "demo", "payloads": [{"n": 1}], "countdown": 60}, {}),
    ({"task": "demo", "payloads": [{"n": 1}]}, {"Idempotency-Key": "order-1"}),
]
WRITE_PATHS = ["multi", "paced", "countdown", "key"]


@pytest.mark.parametrize(("body", "headers"), WRITES, ids=WRITE_PATHS)
def test_every_write_path_answers_202_only_once_replicas_confirm_it(
    topology: LocalSentinel,
    master: redis.Redis,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    both = dispatcher(topology, replicas=2).post(
        "/dispatch", json=body, headers=headers
    )
    assert both.status_code == 202, both.get_json()
    master.flushall()
    # Three replicas cannot confirm: written on the master, answered 503 saying so.
    three = dispatcher(topology, replicas=3)
    refused = three.post("/dispatch", json=body, headers=headers)
    answer = refused.get_json()
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "1")
    assert answer["error"] == "not confirmed on replicas"
    assert "may or may not survive a failover" in answer["outcome"]
    assert "safe with the same Idempotency-Key" in answer["retry"]
    assert len(answer["entry_ids"]) == len(body.get("payloads", [0, 0]))
    metrics = three.get("/metrics").get_data(as_text=True)
    assert "dispatcher_unreplicated_writes_total 1.0" in metrics


@pytest.mark.parametrize(("body", "headers"), WRITES, ids=WRITE_PATHS)
def test_wait_counts_the_writes_of_its_own_connection(
    topology: LocalSentinel,
    master: redis.Redis,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    """With one replica stopped, WAIT 2 on the writing connection gets 1. A WAIT on
    another connection (older writes, or none: both replicas have those) would get
    2, and a 202 for entries one replica alone holds."""
    app = dispatcher(topology, replicas=2)
    for _ in range(3):  # writes both replicas confirmed
        assert app.post("/dispatch", json={"num_messages": 1}).status_code == 202
    stopped = topology.nodes[2]
    stopped.pause()
    try:
        answer = app.post("/dispatch", json=body, headers=headers)
        assert answer.status_code == 503, answer.get_json()
        one = dispatcher(topology, replicas=1)
        headers = {k: f"{v}-again" for k, v in headers.items()}
        assert one.post("/dispatch", json=body, headers=headers).status_code == 202
    finally:
        stopped.resume()


def test_a_retry_with_the_same_key_replays_only_once_replicas_confirm(
    topology: LocalSentinel, master: redis.Redis
) -> None:
    body = {"task": "demo", "payloads": [{"n": 1}, {"n": 2}]}
    key = {"Idempotency-Key": "order-42"}
    three = dispatcher(topology, replicas=3)
    first = three.post("/dispatch", json=body, headers=key)
    assert first.status_code == 503
    written = first.get_json()["entry_ids"]
    # The retry finds the key's record: it writes nothing, and waits again.
    again = three.post("/dispatch", json=body, headers=key)
    assert (again.status_code, again.get_json()["entry_ids"]) == (503, written)
    assert master.xlen(STREAM) == 2
    # Once enough replicas confirm, the retry gets the first request's answer.
    replay = dispatcher(topology, replicas=2).post("/dispatch", json=body, headers=key)
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (202, "true")
    assert replay.get_json()["task_ids"] == written
    assert master.xlen(STREAM) == 2
    metrics = three.get("/metrics").get_data(as_text=True)
    assert "dispatcher_unreplicated_writes_total 2.0" in metrics


def test_python_sends_return_only_once_replicas_confirm_them(
    topology: LocalSentinel, master: redis.Redis
) -> None:
    """Sender with MIN_REPLICAS_ACKED: each way it writes (one XADD, a MULTI, the send
    script with a key or a due time, a replay) waits on its own connection."""

    def sender(count: int) -> Sender:
        redis_settings = sentinel_settings(topology)
        return Sender(
            SenderSettings(redis=redis_settings, replicas=Replicas(count, 100))
        )

    in_a_minute = Timing(in_ms=60_000)
    sends: list[tuple[list[dict[str, int]], dict[str, Any]]] = [
        ([{"n": 1}], {}), ([{"n": 1}, {"n": 2}], {}),
        ([{"n": 1}], {"idempotency_key": "k"}), ([{"n": 1}], {"timing": in_a_minute}),
    ]  # fmt: skip
    two, three = sender(2), sender(3)
    try:
        for payloads, options in sends:
            assert len(two.send_many("demo", payloads, **options)) == len(payloads)
            master.flushall()
            with pytest.raises(NotReplicatedError) as refused:
                three.send_many("demo", payloads, **options)
            assert len(refused.value.entry_ids) == len(payloads)  # written, unconfirmed
        written: list[str] = []
        for _ in range(2):  # a key's replay waits again
            with pytest.raises(NotReplicatedError) as replay:
                three.send_many("demo", [{"n": 1}], idempotency_key="again")
            written = written or replay.value.entry_ids
            assert replay.value.entry_ids == written and master.xlen(STREAM) == 1
        confirmed = two.send_many("demo", [{"n": 1}], idempotency_key="again")
        assert [ref.id for ref in confirmed] == written
    finally:
        two.close()
        three.close()
    assert replicas_from_env({"MIN_REPLICAS_ACKED": "2"}) == Replicas(2, 1000)
    assert replicas_from_env({}) is None


@dataclass
class Answer:
    started_s: float
    ended_s: float
    status: int
    task_ids: list[str] = field(default_factory=list)


class Load:
    """One thread POSTing 5 small tasks every 20 ms, noting every answer."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/dispatch"
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()

    def accepted(self) -> list[str]:
        return [i for a in list(self.answers) if a.status == 202 for i in a.task_ids]

    def _run(self) -> None:
        number = 0
        while not self.stopping.wait(0.02):
            payloads = [{"a": number, "b": n} for n in range(5)]
            body = json.dumps({"task": "math.add", "payloads": payloads}).encode()
            started = time.monotonic()
            status, task_ids = _post(self.url, body)
            self.answers.append(Answer(started, time.monotonic(), status, task_ids))
            number += 1


def _post(url: str, body: bytes) -> tuple[int, list[str]]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())["task_ids"]
    except urllib.error.HTTPError as error:
        return error.code, []
    except OSError:
        return 0, []  # no answer: unknown, like a 503


def missing_results(client: redis.Redis, task_ids: list[str]) -> list[str]:
    """Accepted tasks without a stored result (the result and the ack are one MULTI:
    a failover that loses one loses both, and the entry runs again)."""
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hget(QUEUE.results_key(task_id), task_id)
        found = pipe.execute()
    return [
        task_id for task_id, result in zip(task_ids, found, strict=True) if not result
    ]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_redis_server()
    consumer_env = {"TASK_MODULES": "tests.e2e_tasks", "BLOCK_MS": "200",
                    "CLAIM_IDLE_MS": "1000", "CLAIM_INTERVAL_MS": "100",
                    "RECONNECT_MAX_DELAY_S": "0.5"}  # fmt: skip
    started = Stack(
        tmp_path, consumers=2, consumer_env=consumer_env,
        dispatcher_env={"MIN_REPLICAS_ACKED": "1", "REPLICA_ACK_TIMEOUT_MS": "500"},
        sentinel=LocalSentinel(
            tmp_path / "sentinel", options=SHIPPED, password=PASSWORD
        ),  # AOF fsynced on every write: replicas restart with what they had
    )  # fmt: skip
    yield started.start()
    started.stop()


def test_a_master_killed_under_load_loses_no_task_that_got_a_202(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = stack.sentinel
    assert topology is not None
    with Load(stack.base_url) as load:
        eventually(lambda: len(load.accepted()) >= 100, timeout_s=20)
        # The replicas die (their AOF keeps what they had), the master runs on alone
        # (what it takes now, a failover loses), then dies too.
        old = topology.master()
        replicas = [node for node in topology.nodes if node is not old]
        down = time.monotonic()
        for node in replicas:
            node.kill()
        time.sleep(0.8)
        killed = time.monotonic()
        old.kill()
        for node in replicas:
            node.start()
        new = topology.wait_for_failover(old)
        promoted = time.monotonic()
        eventually(lambda: sum(a.started_s > promoted and a.status == 202
                               for a in load.answers) >= 10, timeout_s=20)  # fmt: skip
    # No replica to confirm, then no master: 503s, never a 202. (No Sentinel may
    # start a failover before the master has been silent DOWN_AFTER_MS.)
    early = killed + DOWN_AFTER_MS / 1000
    blind = {a.status for a in load.answers if down < a.started_s and a.ended_s < early}
    assert 503 in blind and 202 not in blind, blind
    outage = {a.status for a in load.answers if killed < a.started_s < promoted}
    assert 503 in outage
    # Every task that got a 202 runs on the new master: lost = 0.
    accepted = load.accepted()
    with new.client() as promoted_client:
        eventually(lambda: not missing_results(promoted_client, accepted), timeout_s=30)
    assert all(service.alive() for service in stack.consumers.values())
    # The command line finds the new master through the Sentinels too.
    for name, value in topology.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert pipeline(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["redis_url"].startswith(f"master {MASTER_NAME!r} via Sentinels")
    assert status["pending"] == 0 and status["lag"] == 0
