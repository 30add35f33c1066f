"""`python -m bench.frontdoor [--quick]`: the dispatcher's front door through real
gunicorn (one worker): its peak RSS per request for the worst body shapes (VmHWM,
reset before each), how long /healthz waits while the largest valid body is handled,
and /healthz and /dispatch latency while 200 slowloris and 200 silent connections are
held open. Lines of text, like bench/console.py; `make bench` prints them last."""

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from harness.processes import Service, free_port, http_ok, wait_for
from harness.redis_server import EPHEMERAL, RedisServer
from harness.slow_clients import Crowd, SlowClients

MiB = 1 << 20
# (MAX_BODY_BYTES, MAX_JSON_VALUES, MAX_MESSAGES): the shipped defaults, or a smoke run.
FULL = (8 * MiB, 500_000, 100_000)
QUICK = (1 * MiB, 30_000, 2_000)


def payloads(*items: bytes) -> bytes:
    return b'{"task": "x", "payloads": [%s]}' % b",".join(items)


def shapes(limits: tuple[int, int, int]) -> list[tuple[str, bytes]]:
    """(name, body) of the worst shapes, each as large as the limits let it be."""
    size, values, messages = limits
    blob = b"x" * ((size - 40) // messages - 16)
    emoji = "\U0001f600".encode()
    keys = b",".join(b'"k%d": 0' % n for n in range(values - 10))
    lists = b"[]," * (values - 10)
    return [
        ("[[],[],...] filling MAX_BODY_BYTES", b"[%s[]]" % (b"[]," * (size // 3 - 2))),
        ("[[],[],...] at MAX_JSON_VALUES", payloads(b'{"a": [%s[]]}' % lists)),
        ("[[[[...]]]] filling MAX_BODY_BYTES", b"[" * (size // 2) + b"]" * (size // 2)),
        ("distinct keys at MAX_JSON_VALUES", payloads(b"{%s}" % keys)),
        (f"{messages:,} tiny payloads", payloads(*[b'{"n": 1}'] * messages)),
        ("one long ASCII string", payloads(b'{"a": "%s"}' % (b"x" * (size - 50)))),
        ("one long string, one emoji in it",
         payloads(b'{"a": "%s%s"}' % (emoji, b"x" * (size - 60)))),
        ("largest valid body", payloads(*[b'{"blob": "%s"}' % blob] * messages)),
    ]  # fmt: skip


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/dispatch", body, {"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def get_ms(port: int, path: str, body: bytes | None = None) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    method = "POST" if body else "GET"
    conn.request(method, path, body, {"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()
    return (time.perf_counter() - started) * 1000


def peak(
    port: int, worker: psutil.Process, bodies: list[bytes]
) -> tuple[list[int], str]:
    """The answers to `bodies` (sent at once), and the worker's peak RSS meanwhile."""
    Path(f"/proc/{worker.pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS
    idle = worker.memory_info().rss / MiB
    statuses = post_at_once(port, bodies)
    status = Path(f"/proc/{worker.pid}/status").read_text()
    hwm = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
    return statuses, f"peak {hwm / 1024:5.0f} MiB (+{hwm / 1024 - idle:4.0f} over idle)"


def fresh_worker(master: psutil.Process, port: int) -> psutil.Process:
    """A new gunicorn worker, warmed by a small dispatch: each shape's peak is its own,
    not the high-water mark an earlier shape left in the allocator."""
    for old in master.children():
        old.terminate()
        old.wait(timeout=30)
    worker: psutil.Process = wait_for(master.children, timeout_s=30)[0]
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
    post(port, b'{"num_messages": 1}')
    return worker


def memory_lines(
    port: int, master: psutil.Process, limits: tuple[int, int, int], quick: bool
) -> list[str]:
    """Each shape's peak on a fresh worker (quick: one worker for all, a smoke run:
    a shape's figure may then hold an earlier one's high-water mark)."""
    lines = []
    bodies = shapes(limits)
    worker = fresh_worker(master, port)
    for number, (name, body) in enumerate(bodies):
        if number and not quick:
            worker = fresh_worker(master, port)
        statuses, figure = peak(port, worker, [body])
        lines.append(f"{name} ({len(body) / MiB:.1f} MiB): {statuses[0]}, {figure}")
    largest = bodies[-1][1]
    worker = fresh_worker(master, port)
    statuses, figure = peak(port, worker, [largest, largest])
    lines.append(f"two largest valid bodies at once: {statuses}, {figure}")
    stall = stall_ms(port, largest)
    lines.append(f"/healthz while the largest valid body is handled: {stall}")
    return lines


def post_at_once(port: int, bodies: list[bytes]) -> list[int]:
    """The statuses of POSTs of `bodies`, all sent at once."""
    answers: list[int] = []
    senders = [
        threading.Thread(target=lambda b=body: answers.append(post(port, b)))
        for body in bodies
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    return sorted(answers)


def stall_ms(port: int, body: bytes) -> str:
    """The slowest /healthz (every 10 ms) while one largest valid body is handled:
    parsing, checking and writing it hold the worker (gevent does not preempt)."""
    sender = threading.Thread(target=post, args=(port, body))
    times = []
    sender.start()
    while sender.is_alive():
        times.append(get_ms(port, "/healthz"))
        time.sleep(0.01)
    return f"max {max(times):.0f} ms over {len(times)} probes"


def crowd_lines(port: int, worker: psutil.Process, quick: bool) -> list[str]:
    idle = worker.memory_info().rss / MiB
    health: list[float] = []
    dispatch: list[float] = []
    with SlowClients(port, Crowd(slowloris=200, silent=200)):
        end = time.monotonic() + (1 if quick else 7)  # 7 s: past the 5 s head deadline
        while time.monotonic() < end:
            health.append(get_ms(port, "/healthz"))
            dispatch.append(get_ms(port, "/dispatch", b'{"num_messages": 1}'))
            time.sleep(0.05)
        held = worker.memory_info().rss / MiB
    crowd = "while 200 slowloris + 200 silent connections are held open"
    return [
        f"/healthz {crowd}: {spread(health)}",
        f"POST /dispatch (1 message) {crowd}: {spread(dispatch)}",
        f"worker RSS with those 400 connections: {held:.0f} MiB ({held - idle:+.0f})",
    ]


def spread(times_ms: list[float]) -> str:
    return f"median {statistics.median(times_ms):.1f} ms, max {max(times_ms):.1f} ms"


def run(quick: bool, workdir: Path) -> list[str]:
    """A private Redis and a dispatcher of one worker; the memory, then the crowd."""
    size, values, messages = limits = QUICK if quick else FULL
    server = RedisServer(workdir / "redis", EPHEMERAL).start()
    port = free_port()
    env = {"REDIS_URL": server.url, "PORT": str(port), "HOST": "127.0.0.1",
           "DISPATCH_ALLOW_ANONYMOUS": "1", "LOG_LEVEL": "WARNING",
           "MAX_BODY_BYTES": str(size), "MAX_JSON_VALUES": str(values),
           "MAX_MESSAGES": str(messages),
           "MAX_BACKLOG": str(messages * 10)}  # several accepted bodies  # fmt: skip
    dispatcher = Service("dispatcher", env, workdir / "dispatcher.log")
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
        master = psutil.Process(dispatcher.pid)
        lines = memory_lines(port, master, limits, quick)
        lines += crowd_lines(port, fresh_worker(master, port), quick)
        master_mib = master.memory_info().rss / MiB
        lines.append(
            f"gunicorn master RSS (the pod holds it too): {master_mib:.0f} MiB"
        )
    finally:
        dispatcher.stop(show_log=False)
        server.kill()
    title = (f"Front door, one gunicorn worker: MAX_BODY_BYTES {size:,}, "
             f"MAX_JSON_VALUES {values:,}, MAX_MESSAGES {messages:,}")  # fmt: skip
    return [title, *(f"Front door: {line}" for line in lines)]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.frontdoor")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-frontdoor-") as workdir:
        print("\n".join(run(args.quick, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
