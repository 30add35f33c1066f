"""The pipeline's own figures: real `python -m dispatcher` and `python -m consumer`
processes against the same Redis the raw limit ran on."""

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import redis

from bench.raw import BATCH
from harness.processes import Service, wait_for

STREAM, GROUP = "tasks", "workers"
WARM_UP_S = 1.0
CONSUMER_ENV = {
    "BATCH_SIZE": str(BATCH),
    "METRICS_PORT": "0",
    "LOG_LEVEL": "WARNING",
    "TASK_MODULES": "bench.tasks",
}


def post(url: str, body: object) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def dispatch_rate(base: str, count: int, per_request: int, threads: int) -> float:
    """Messages per second accepted through POST /dispatch."""
    requests = count // per_request
    numbers = iter(range(requests))
    lock = threading.Lock()

    def send() -> None:
        while True:
            with lock:
                if next(numbers, None) is None:
                    return
            post(
                f"{base}/dispatch", {"task": "bench.noop", "num_messages": per_request}
            )

    senders = [threading.Thread(target=send) for _ in range(threads)]
    started = time.perf_counter()
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    return requests * per_request / (time.perf_counter() - started)


def fill(client: redis.Redis, count: int) -> None:
    """`count` no-op entries in one MULTI/EXEC: they appear to the group all at once."""
    with client.pipeline(transaction=True) as pipe:
        for _ in range(count):
            pipe.xadd(STREAM, {"task": "bench.noop", "payload": "{}"})
        pipe.execute()


@contextmanager
def consumers(
    url: str, count: int, log_dir: Path, **env: str
) -> Iterator[list[Service]]:
    settings = {**CONSUMER_ENV, "REDIS_URL": url, **env}
    started = [
        Service(
            "consumer",
            {**settings, "CONSUMER_NAME": f"bench-{n}"},
            log_dir / f"c{n}.log",
        )
        for n in range(count)
    ]
    try:
        yield started
    finally:
        for service in started:
            service.stop(show_log=False)


def idle_group(client: redis.Redis, count: int) -> bool:
    """`count` consumers wait in XREADGROUP. (Redis 7.0 adds a consumer to the group
    only when it first gets an entry, so XINFO CONSUMERS cannot tell.)"""
    waiting = [c for c in client.client_list() if c["cmd"] == "xreadgroup"]
    return len(waiting) >= count


def finished(client: redis.Redis, count: int) -> bool:
    group = client.xinfo_groups(STREAM)[0]
    return bool(group["entries-read"] >= count and group["pending"] == 0)


@dataclass(frozen=True)
class Drain:
    rate: float  # entries per second
    peak_rss: int  # bytes, the largest consumer's
    memory_after: int  # Redis used_memory once the consumers trimmed the stream


def drain(
    url: str, client: redis.Redis, count: int, workers: int, log_dir: Path
) -> Drain:
    """`count` no-op entries drained by `workers` consumer processes."""
    client.flushall()
    client.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    with consumers(url, workers, log_dir) as services:
        wait_for(lambda: idle_group(client, workers), timeout_s=30)
        fill(client, count)
        started = time.perf_counter()
        wait_for(lambda: finished(client, count), timeout_s=300, every_s=0.005)
        rate = count / (time.perf_counter() - started)
        # The consumers trim acknowledged entries every TRIM_INTERVAL_MS (5 s).
        wait_for(lambda: client.xlen(STREAM) <= 1, timeout_s=15, every_s=0.1)
        memory = int(client.info("memory")["used_memory"])
        return Drain(rate, max(peak_rss(s.pid) for s in services), memory)


def peak_rss(pid: int) -> int:
    """The peak resident memory (bytes) of a process and of its children."""
    process = psutil.Process(pid)
    peaks = []
    for member in [process, *process.children(recursive=True)]:
        status = Path(f"/proc/{member.pid}/status").read_text()
        [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
        peaks.append(int(line.split()[1]) * 1024)
    return max(peaks)


def primes_seconds(
    url: str, client: redis.Redis, workers: int, tasks: int, n: int, log_dir: Path
) -> float:
    """Seconds `workers` consumers take for `tasks` entries of primes(n)."""
    client.flushall()
    client.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    with consumers(url, workers, log_dir, BATCH_SIZE="1"):
        wait_for(lambda: idle_group(client, workers), timeout_s=30)
        with client.pipeline(transaction=True) as pipe:
            for _ in range(tasks):
                pipe.xadd(STREAM, {"task": "primes", "payload": json.dumps({"n": n})})
            pipe.execute()
        started = time.perf_counter()
        wait_for(lambda: finished(client, tasks), timeout_s=600, every_s=0.005)
        return time.perf_counter() - started


def latencies(
    base: str, url: str, client: redis.Redis, seconds: float, log_dir: Path
) -> tuple[list[float], list[float]]:
    """At 1,000 messages a second (10 every 10 ms), seconds from the client's send to
    the task's start (the task notes it), and to the acknowledgement (the consumers'
    DEBUG line "messages acked", logged once the batch's MULTI/EXEC returned)."""
    client.flushall()
    client.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    stamps = log_dir / "stamps"
    stamps.mkdir(exist_ok=True)
    env = {"BENCH_STAMP_DIR": str(stamps), "LOG_LEVEL": "DEBUG"}
    with consumers(url, 2, log_dir, **env) as services:
        wait_for(lambda: idle_group(client, 2), timeout_s=30)
        sent = _send_steadily(base, seconds + WARM_UP_S)
        wait_for(lambda: finished(client, len(sent)), timeout_s=60)
        logs = [service.log_path for service in services]
    acked = _ack_times([path for path in logs if path])
    # The first second warms the processes up (connections, caches): not steady state.
    steady_from = min(sent.values()) + WARM_UP_S
    stamped = [
        line.split()
        for f in stamps.glob("*.starts")
        for line in f.read_text().splitlines()
    ]
    starts = [float(lag) for at, lag in stamped if float(at) >= steady_from]
    acks = [acked[entry_id] - at for entry_id, at in sent.items() if at >= steady_from]
    return starts, acks


def _ack_times(logs: list[Path]) -> dict[str, float]:
    acked: dict[str, float] = {}
    for path in logs:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["message"] == "messages acked":
                at = datetime.fromisoformat(record["time"]).timestamp()
                acked |= dict.fromkeys(record["entry_ids"], at)
    return acked


def _send_steadily(base: str, seconds: float) -> dict[str, float]:
    """POST 10 messages every 10 ms on one kept-alive connection, as a client would."""
    sent: dict[str, float] = {}
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    next_s = time.monotonic()
    deadline = next_s + seconds
    while next_s < deadline:
        time.sleep(max(0.0, next_s - time.monotonic()))
        next_s += 0.01
        now = time.time()
        body = json.dumps({"task": "bench.stamp", "payloads": [{"sent": now}] * 10})
        connection.request(
            "POST", "/dispatch", body, {"Content-Type": "application/json"}
        )
        entry_ids = json.loads(connection.getresponse().read())["entry_ids"]
        sent |= dict.fromkeys(entry_ids, now)
    connection.close()
    return sent
