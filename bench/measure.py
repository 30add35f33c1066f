"""The pipeline's figures over HTTP: real `python -m dispatcher` and `python -m
consumer` processes (default settings) against the same Redis the raw limit ran on:
dispatch rates, and the time from a client's send to a task's start and to its ack."""

import http.client
import json
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import redis

from bench import drain
from bench.raw import WARM_UP_S
from harness.processes import wait_for


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


def latencies(
    base: str, url: str, client: redis.Redis, seconds: float, log_dir: Path
) -> tuple[list[float], list[float]]:
    """At 1,000 messages a second (10 every 10 ms), seconds from the client's send to
    the task's start (the task notes it), and to the acknowledgement. Two runs: the
    starts with the consumers logging as in every other row (LOG_LEVEL WARNING; the
    default, INFO, logs nothing per batch either); the acks in a run of their own,
    read from the consumers' DEBUG line "messages acked" (logged once the batch's
    MULTI/EXEC returned), since writing that line per batch delays the next read
    (by about 0.7 ms dispatch -> start at p50, measured on the 2-core machine)."""
    sent, stamped = _steady_run(base, url, client, seconds, log_dir / "starts", {})
    steady_from = min(sent.values()) + WARM_UP_S  # the warm-up is not counted
    starts = [lag for at, lag in stamped if at >= steady_from]
    logs = log_dir / "acks"
    sent, _ = _steady_run(base, url, client, seconds, logs, {"LOG_LEVEL": "DEBUG"})
    steady_from = min(sent.values()) + WARM_UP_S
    acked = _ack_times(sorted(logs.glob("*.log")))
    acks = [acked[entry_id] - at for entry_id, at in sent.items() if at >= steady_from]
    return starts, acks


def _steady_run(
    base: str,
    url: str,
    client: redis.Redis,
    seconds: float,
    log_dir: Path,
    env: dict[str, str],
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """2 consumers (default settings but `env`), idle in XREADGROUP, are sent 1,000
    messages a second for a warm-up and `seconds`, until every one is acknowledged:
    entry ID -> when sent, and each task's (when sent, seconds from then to start)."""
    drain.fresh_group(client)
    stamps = log_dir / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    with drain.consumers(url, 2, log_dir, BENCH_STAMP_DIR=str(stamps), **env):
        wait_for(lambda: drain.waiting(client, 2), timeout_s=60)
        sent = _send_steadily(base, seconds + WARM_UP_S)
        wait_for(lambda: drain.finished(client, len(sent)), timeout_s=60)
    stamped = [
        (float(at), float(lag))
        for f in stamps.glob("*.starts")
        for at, lag in (line.split() for line in f.read_text().splitlines())
    ]
    return sent, stamped


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
