"""End to end: `python -m dispatcher` and `python -m consumer` processes, a real Redis,
driven over HTTP."""

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from harness.processes import Service, free_port, http_ok
from harness.redis_server import RedisServer
from tests.conftest import eventually
from tests.factories import (
    DEAD,
    FAST_CONSUMER,
    STREAM,
    call,
    dead_letters,
    drained,
    pending,
)

pytestmark = pytest.mark.timeout(90)

FAST = {**FAST_CONSUMER, "MAX_DELIVERIES": "3", "TASK_MODULES": "tests.e2e_tasks"}

StartConsumer = Callable[..., Service]


def start_dispatcher(redis_url: str, log_dir: Path) -> tuple[Service, str]:
    port = free_port()
    env = {"REDIS_URL": redis_url, "PORT": str(port), "HOST": "127.0.0.1"}
    env["DISPATCH_ALLOW_ANONYMOUS"] = "1"  # loopback only; auth: test_security.py
    service = Service("dispatcher", env, log_dir / "dispatcher.log")
    base = f"http://127.0.0.1:{port}"
    eventually(lambda: http_ok(f"{base}/healthz"), timeout_s=20)
    return service, base


@pytest.fixture(scope="module")
def dispatcher(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    service, base = start_dispatcher(redis_url, tmp_path_factory.mktemp("dispatcher"))
    yield base
    service.stop()


@pytest.fixture
def start_consumer(
    redis_url: str, tmp_path: Path, r: redis.Redis
) -> Iterator[StartConsumer]:
    started: list[Service] = []

    def start(name: str, url: str = redis_url, **env: str) -> Service:
        settings = {**FAST, "REDIS_URL": url, "CONSUMER_NAME": name, **env}
        service = Service("consumer", settings, tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def test_e2e_the_seed_request_is_processed(
    dispatcher: str, start_consumer: StartConsumer, r: redis.Redis
) -> None:
    consumers = [start_consumer("pod-a"), start_consumer("pod-b")]
    status, body = call(f"{dispatcher}/dispatch", {"num_messages": 10, "delay": 0.1})
    assert (status, body["count"]) == (202, 10)
    eventually(lambda: drained(r, 10), timeout_s=20)
    for seq, entry_id in enumerate(body["entry_ids"]):
        assert call(f"{dispatcher}/results/{entry_id}") == (
            200,
            {"entry_id": entry_id, "result": {"seq": seq}},
        )
    # Acknowledged entries are trimmed away: the stream keeps only its newest entry.
    eventually(lambda: r.xlen(STREAM) <= 1)
    lines = [json.loads(x) for c in consumers for x in c.log_text().splitlines()]
    acked = [x for x in lines if x["message"] == "demo message processed"]
    assert len(acked) == 10
    assert {x["consumer"] for x in lines} <= {"pod-a", "pod-b"}


def test_e2e_a_user_task_module_runs_and_its_results_are_readable(
    dispatcher: str, start_consumer: StartConsumer, r: redis.Redis
) -> None:
    start_consumer("pod-a")
    payloads = [{"path": "a.png", "width": 64}, {"path": "b.png", "width": 32}]
    status, body = call(
        f"{dispatcher}/dispatch", {"task": "resize", "payloads": payloads}
    )
    assert status == 202
    _, added = call(
        f"{dispatcher}/dispatch", {"task": "math.add", "payloads": [{"a": 2, "b": 3}]}
    )
    eventually(lambda: drained(r, 3), timeout_s=20)
    results = [
        call(f"{dispatcher}/results/{i}")[1]["result"] for i in body["entry_ids"]
    ]
    assert results == [
        {"path": "a.png", "width": 64, "thumbnail": "a.png@64"},
        {"path": "b.png", "width": 32, "thumbnail": "b.png@32"},
    ]
    assert call(f"{dispatcher}/results/{added['entry_ids'][0]}")[1]["result"] == 5


def test_e2e_sigkill_of_a_consumer_mid_task_loses_nothing(
    dispatcher: str, start_consumer: StartConsumer, r: redis.Redis
) -> None:
    victim = start_consumer("victim", BATCH_SIZE="4")
    payloads = [{"n": n, "seconds": 0.2} for n in range(8)]
    status, body = call(
        f"{dispatcher}/dispatch", {"task": "slow", "payloads": payloads}
    )
    assert status == 202
    # The victim holds a batch and is in the middle of a task when it dies.
    eventually(lambda: any(row["consumer"] == "victim" for row in pending(r)))
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    held = [row["message_id"] for row in pending(r) if row["consumer"] == "victim"]
    assert held
    start_consumer("survivor")
    eventually(lambda: drained(r, 8), timeout_s=30)
    results = [
        call(f"{dispatcher}/results/{i}")[1]["result"] for i in body["entry_ids"]
    ]
    assert results == list(range(8))
    assert pending(r) == []


def test_e2e_a_task_that_always_raises_ends_dead_lettered(
    dispatcher: str, start_consumer: StartConsumer, r: redis.Redis
) -> None:
    start_consumer("pod-a")
    start_consumer("pod-b")
    status, body = call(
        f"{dispatcher}/dispatch", {"task": "explode", "payloads": [{"x": 1}]}
    )
    assert status == 202
    eventually(lambda: r.exists(DEAD), timeout_s=20)
    [dead] = dead_letters(r)
    assert dead["id"] == body["task_ids"][0]  # its task, across its retries' entries
    assert dead["deliveries"] == FAST["MAX_DELIVERIES"]  # attempts in all
    assert dead["error"] == "RuntimeError: this task always fails"
    assert dead["consumer"] in {"pod-a", "pod-b"}
    assert (dead["task"], json.loads(dead["payload"])) == ("explode", {"x": 1})
    assert pending(r) == []
    assert call(f"{dispatcher}/results/{body['entry_ids'][0]}")[0] == 404


def test_e2e_sigterm_finishes_the_task_in_hand_and_exits_0(
    dispatcher: str, start_consumer: StartConsumer, r: redis.Redis, tmp_path: Path
) -> None:
    leaving = start_consumer("leaving", BATCH_SIZE="5", CLAIM_IDLE_MS="60000")
    marks = [tmp_path / f"started-{n}" for n in range(5)]
    payloads = [{"n": n, "seconds": 0.3, "mark": str(m)} for n, m in enumerate(marks)]
    _, body = call(f"{dispatcher}/dispatch", {"task": "slow", "payloads": payloads})
    eventually(lambda: marks[0].exists())
    leaving.signal(signal.SIGTERM)  # while the first task of its batch of 5 runs
    assert leaving.wait(10) == 0
    # Pending list: the 4 unstarted entries, released (idle long, delivery undone).
    assert call(f"{dispatcher}/results/{body['entry_ids'][0]}")[1]["result"] == 0
    assert [row["message_id"] for row in pending(r)] == body["entry_ids"][1:]
    assert {row["times_delivered"] for row in pending(r)} == {0}
    assert '"entries released"' in leaving.log_text()
    # Another consumer takes them at once, despite a claim_idle_ms of a minute.
    start_consumer("staying", CLAIM_IDLE_MS="60000")
    eventually(lambda: drained(r, 5), timeout_s=20)


def test_e2e_services_ride_out_a_redis_restart(
    tmp_path: Path, start_consumer: StartConsumer
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    dispatcher_service, base = start_dispatcher(server.url, tmp_path)
    client = server.client()
    try:
        consumer = start_consumer("pod-a", url=server.url)
        assert call(f"{base}/dispatch", {"num_messages": 2})[0] == 202
        eventually(lambda: drained(client, 2), timeout_s=20)
        server.kill()
        status, body = call(f"{base}/dispatch", {"num_messages": 2})
        assert (status, body["error"], body["reason"]) == (
            503,
            "redis unavailable",
            "redis unreachable",
        )
        assert call(f"{base}/readyz")[0] == 503
        # Down for longer than the client retries: the worker loop waits it out.
        eventually(lambda: '"redis unavailable, retrying"' in consumer.log_text())
        server.start()
        eventually(lambda: call(f"{base}/readyz")[0] == 200)
        assert call(f"{base}/dispatch", {"num_messages": 3})[0] == 202
        eventually(lambda: drained(client, 5), timeout_s=20)
        assert consumer.process.poll() is None
        eventually(lambda: '"redis available again"' in consumer.log_text())
    finally:
        client.close()
        dispatcher_service.stop()
        server.kill()


@pytest.mark.parametrize(
    ("module", "env", "named"),
    [
        ("consumer", {"MAX_DELIVERIES": "lots"}, "MAX_DELIVERIES"),
        ("consumer", {"TASK_MODULES": "no.such.module"}, "TASK_MODULES"),
        ("dispatcher", {"PORT": "eighty"}, "PORT"),
    ],
)
def test_e2e_a_bad_setting_stops_the_process_naming_it(
    tmp_path: Path, module: str, env: dict[str, str], named: str
) -> None:
    service = Service(module, env, tmp_path / "out.log")
    assert service.wait(20) == 2
    assert named in service.log_text()
    service.stop()


def test_e2e_dispatcher_with_several_processes_sums_its_metrics(
    redis_url: str, tmp_path: Path, r: redis.Redis
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale samples of an earlier run")
    port = free_port()
    env = {"REDIS_URL": redis_url, "PORT": str(port), "HOST": "127.0.0.1"}
    env |= {"HTTP_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    env["DISPATCH_ALLOW_ANONYMOUS"] = "1"
    service = Service("dispatcher", env, tmp_path / "dispatcher.log")
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: http_ok(f"{base}/healthz"), timeout_s=30)
        for _ in range(20):  # spread over both workers by the kernel's accept queue
            assert call(f"{base}/dispatch", {"num_messages": 3})[0] == 202
        for _ in range(4):  # every worker answers with the sum of all of them
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                text = response.read().decode()
            assert 'dispatcher_messages_total{outcome="accepted"} 60.0' in text
            samples = [
                x for x in text.splitlines() if x.startswith("pipeline_stream_length")
            ]
            assert len(samples) == 1  # the stream state is read once, not per worker
        assert not (metrics_dir / "counter_99999.db").exists()  # wiped at start
    finally:
        service.stop()
