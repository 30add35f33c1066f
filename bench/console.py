"""`python -m bench.console [--quick]`: the console's pages against 1,000,000 pending
entries and 1,000,000 dead letters, through the real dispatcher (gunicorn), one table:
median and slowest of several requests per page, against the 300 ms target."""

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from dispatcher.console import data
from harness.processes import Service, free_port, http_ok, wait_for
from harness.redis_server import EPHEMERAL, RedisServer
from pipeline_core.keys import Queue
from pipeline_core.wire import entry_ms, stream_entries

STREAM, GROUP, DEAD = "tasks", "workers", "{tasks}:dead"
CONSUMERS = 4
CHUNK = 50_000  # entries one Lua call writes or reads: Redis stays responsive
REQUESTS = 10  # timed per page, after one untimed
TARGET_MS = 300.0
RARE = 250_000  # one dead letter in this many says "Needle": a search that finds little

# Lua: the fastest fill there is (no round trip per entry). Bench only.
ADD = """
for i = 1, tonumber(ARGV[1]) do
  redis.call('XADD', KEYS[1], '*', 'task', 'demo', 'payload', '{"n":' .. i .. '}')
end
"""
READ = """
redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
           'STREAMS', KEYS[1], '>')
"""
DEAD_LETTERS = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local task = (i % 10 == 0) and 'resize' or 'demo'
  local error = (i % tonumber(ARGV[3]) == 0) and 'Needle: found it'
                or ('ValueError: boom ' .. i)
  redis.call('XADD', KEYS[1], '*', 'task', task, 'payload', '{"n":' .. i .. '}',
             'source_id', i .. '-0', 'error', error, 'deliveries', '5',
             'consumer', 'bench-0')
end
"""


def fill(client: redis.Redis, count: int) -> None:
    """`count` entries pending over CONSUMERS consumers, and `count` dead letters."""
    add, read = client.register_script(ADD), client.register_script(READ)
    dead = client.register_script(DEAD_LETTERS)
    for first in range(0, count, CHUNK):
        size = min(CHUNK, count - first)
        add(keys=[STREAM], args=[size])
        dead(keys=[DEAD], args=[first + 1, first + size, RARE])
    client.xgroup_create(STREAM, GROUP, "0")
    per_consumer = count // CONSUMERS
    for n in range(CONSUMERS):
        for first in range(0, per_consumer, CHUNK):
            size = min(CHUNK, per_consumer - first)
            read(keys=[STREAM], args=[GROUP, f"bench-{n}", size])


def pages(client: redis.Redis) -> list[tuple[str, str]]:
    """(name, path) of every page, with cursors from the middle of the data."""
    # consumers read a quarter each, in turn: bench-2's oldest sits past the middle
    [row] = client.xpending_range(STREAM, GROUP, "-", "+", 1, consumername="bench-2")
    middle_pending = row["message_id"]
    info = client.xinfo_stream(DEAD)
    first, last = info["first-entry"][0], info["last-entry"][0]
    middle_ms = (entry_ms(first) + entry_ms(last)) // 2
    [(middle_dead, _)] = stream_entries(client.xrange(DEAD, min=middle_ms, count=1))
    if not isinstance(middle_pending, str) or not isinstance(last, str):
        raise TypeError("expected decoded entry IDs")
    return [
        ("Overview", "/ui/"),
        ("Throughput chart (JSON)", "/ui/api/throughput"),
        ("Consumers", "/ui/consumers"),
        ("Pending, first page", "/ui/pending"),
        ("Pending, a page from a cursor", f"/ui/pending?after={middle_pending}"),
        ("Pending, one consumer's", "/ui/pending?consumer=bench-2"),
        ("Dead letters, first page", "/ui/dead"),
        ("Dead letters, a page from a cursor", f"/ui/dead?after={middle_dead}"),
        ("Dead letters, by task (1 in 10)", "/ui/dead?task=resize"),
        ("Dead letters, rare text (budget spent)", "/ui/dead?error=needle"),
        ("One dead letter", f"/ui/dead/{last}"),
    ]


def time_page(port: int, path: str) -> list[float]:
    """Milliseconds per GET on one kept-alive connection (the first one untimed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for attempt in range(REQUESTS + 1):
            started = time.perf_counter()
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"GET {path} answered {answer.status}")
            if attempt:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return times


def run(count: int, workdir: Path) -> list[str]:
    """Fill a private Redis, start the dispatcher on it, time every page."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir / "redis", EPHEMERAL).start()
    client = server.client()
    port = free_port()
    env = {"REDIS_URL": server.url, "PORT": str(port), "HOST": "127.0.0.1",
           "DISPATCH_ALLOW_ANONYMOUS": "1", "LOG_LEVEL": "WARNING"}  # fmt: skip
    dispatcher = Service("dispatcher", env, workdir / "dispatcher.log")
    try:
        started = time.perf_counter()
        fill(client, count)
        filled_s = time.perf_counter() - started
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
        check_filled(client, count)
        rows = [(name, time_page(port, path)) for name, path in pages(client)]
        memory_mib = int(client.info("memory")["used_memory"]) / 2**20
        action = time_action_scan(client)
    finally:
        dispatcher.stop(show_log=False)
        client.close()
        server.kill()
    title = (f"Console pages, {count:,} pending and {count:,} dead letters "
             f"(filled in {filled_s:.0f} s, Redis {memory_mib:,.0f} MiB)")  # fmt: skip
    return [title, *table(rows), action]


def check_filled(client: redis.Redis, count: int) -> None:
    [group] = client.xinfo_groups(STREAM)
    filled = (client.xlen(STREAM), group["pending"], client.xlen(DEAD))
    if filled != (count, count, count):
        raise RuntimeError(f"filled {filled}, expected {count} of each")


def time_action_scan(client: redis.Redis) -> str:
    """One confirmed step of an action on every match of a rare text: it examines
    ACTION_SCAN_BUDGET letters (an action, not a page: no target)."""
    started = time.perf_counter()
    chosen = data.matching_letters(client, Queue(), data.DeadFilter(error="needle"))
    took_ms = (time.perf_counter() - started) * 1000
    return (f"Console action: one step of 'replay every match' of a rare text "
            f"({data.ACTION_SCAN_BUDGET:,} examined): {took_ms:,.0f} ms, "
            f"{len(chosen.letters)} found")  # fmt: skip


def table(rows: list[tuple[str, list[float]]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    lines = []
    for name, times in rows:
        median, slowest = statistics.median(times), max(times)
        verdict = "ok" if slowest <= TARGET_MS else "MISSED"
        figures = f"median {median:6.1f} ms, max {slowest:6.1f} ms"
        lines.append(
            f"Console: {name:<{width}}  {figures}  target <= 300 ms: {verdict}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console", description=__doc__
    )
    parser.add_argument(
        "--quick", action="store_true", help="20,000 of each: a smoke run"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as workdir:
        print("\n".join(run(20_000 if args.quick else 1_000_000, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
