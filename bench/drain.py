"""The drain clock, the same for the raw limit and the pipeline. The consumer processes
wait in XREADGROUP, are stopped (SIGSTOP) while the stream is filled, and the clock
starts as they are resumed (SIGCONT): neither their start-up nor the fill is timed, and
none of them works before the clock runs. It stops once the group has read and
acknowledged every entry."""

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from redis.typing import EncodableT, FieldT

from harness.processes import Service, wait_for

STREAM, GROUP = "tasks", "workers"
NOOP: dict[FieldT, EncodableT] = {"task": "bench.noop", "payload": "{}"}
FILL_CHUNK = (
    10_000  # XADDs per pipeline: the consumers are stopped, nothing need be atomic
)
CONSUMER_ENV = {
    "METRICS_PORT": "0",
    "LOG_LEVEL": "WARNING",
    "TASK_MODULES": "bench.tasks",
}


@dataclass(frozen=True)
class Drain:
    seconds: float  # from SIGCONT to the last acknowledgement
    peak_rss: int  # bytes: the largest consumer process's peak (VmHWM)
    bytes_per_entry: float  # Redis used_memory the fill added, per entry


def fresh_group(client: redis.Redis) -> None:
    client.flushall()
    client.xgroup_create(STREAM, GROUP, "0", mkstream=True)


@contextmanager
def consumers(
    url: str, count: int, log_dir: Path, module: str = "consumer", **env: str
) -> Iterator[list[Service]]:
    """`count` processes of `python -m module` (default settings unless env says),
    named bench-0, bench-1, ...; stopped on exit."""
    settings = {**CONSUMER_ENV, "REDIS_URL": url, **env}
    started = [
        Service(
            module, {**settings, "CONSUMER_NAME": f"bench-{n}"}, log_dir / f"{n}.log"
        )
        for n in range(count)
    ]
    try:
        yield started
    finally:
        for service in started:
            service.stop(show_log=False)


def waiting(client: redis.Redis, count: int) -> bool:
    """`count` bench consumers are blocked in XREADGROUP (CLIENT LIST names them)."""
    names = {
        str(c.get("name"))
        for c in client.client_list()
        if c.get("cmd") == "xreadgroup" and "b" in str(c.get("flags"))
    }
    return {f"bench-{n}" for n in range(count)} <= names


def fill(client: redis.Redis, count: int, fields: dict[FieldT, EncodableT]) -> None:
    for first in range(0, count, FILL_CHUNK):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(FILL_CHUNK, count - first)):
                pipe.xadd(STREAM, fields)
            pipe.execute()


def finished(client: redis.Redis, count: int) -> bool:
    group = client.xinfo_groups(STREAM)[0]
    read = group["entries-read"] or 0  # None until the group's first read
    return bool(read >= count and group["pending"] == 0)


def drain(
    client: redis.Redis,
    services: list[Service],
    count: int,
    fields: dict[FieldT, EncodableT] = NOOP,
    every_s: float = 0.005,
) -> Drain:
    """Time `services` (just started, on a fresh group) draining `count` entries."""
    wait_for(lambda: waiting(client, len(services)), timeout_s=60, every_s=0.05)
    for service in services:
        service.signal(signal.SIGSTOP)
    before = int(client.info("memory")["used_memory"])
    fill(client, count, fields)
    added = int(client.info("memory")["used_memory"]) - before
    started = time.perf_counter()
    for service in services:
        service.signal(signal.SIGCONT)
    wait_for(lambda: finished(client, count), timeout_s=900, every_s=every_s)
    seconds = time.perf_counter() - started
    rss = max(peak_rss(service.pid) for service in services)
    return Drain(seconds, rss, added / count)


def peak_rss(pid: int) -> int:
    """The peak resident memory (bytes) of a process and of its children."""
    process = psutil.Process(pid)
    peaks = []
    for member in [process, *process.children(recursive=True)]:
        status = Path(f"/proc/{member.pid}/status").read_text()
        [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
        peaks.append(int(line.split()[1]) * 1024)
    return max(peaks)
