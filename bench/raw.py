"""The raw limits, with no pipeline code around them: plain redis-py writers here, plain
consumer processes (bench/raw_consumer.py) drained on the same clock as ours, and plain
multiprocessing processes for CPU-bound work."""

import multiprocessing
import time
from pathlib import Path

import redis
from redis.typing import EncodableT, FieldT

from bench import drain
from consumer.tasks import primes
from harness.processes import wait_for

BATCH = 500
# Latencies are kept from the second second on: the first warms the processes up
# (connections, caches), which is not the steady state.
WARM_UP_S = 1.0
FIELDS: dict[FieldT, EncodableT] = {"task": "bench.noop", "payload": "{}"}


def xadd_rate(url: str, count: int) -> float:
    """Entries per second appended in pipelines of BATCH."""
    with redis.Redis.from_url(url) as client:
        client.delete("bench:raw")
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            with client.pipeline(transaction=False) as pipe:
                for _ in range(min(BATCH, count - first)):
                    pipe.xadd("bench:raw", FIELDS)
                pipe.execute()
        return count / (time.perf_counter() - started)


def xadd_one_rate(url: str, count: int) -> float:
    """Entries per second appended one XADD per round trip."""
    with redis.Redis.from_url(url) as client:
        client.delete("bench:raw")
        started = time.perf_counter()
        for _ in range(count):
            client.xadd("bench:raw", FIELDS)
        return count / (time.perf_counter() - started)


def drain_seconds(
    url: str, client: redis.Redis, count: int, processes: int, log_dir: Path
) -> float:
    """Seconds `processes` raw consumers take for `count` no-op entries."""
    drain.fresh_group(client)
    with drain.consumers(url, processes, log_dir, "bench.raw_consumer") as services:
        return drain.drain(client, services, count).seconds


def wake_latencies(
    url: str, client: redis.Redis, seconds: float, log_dir: Path
) -> list[float]:
    """The floor for dispatch->start: seconds from a plain XADD (10 every 10 ms, in one
    pipeline) until a raw consumer, blocked in XREADGROUP, has the entry; the same
    pace, warm-up and duration as the pipeline's figure."""
    drain.fresh_group(client)
    stamps = log_dir / "raw.stamps"
    with drain.consumers(url, 1, log_dir, "bench.raw_consumer", RAW_STAMPS=str(stamps)):
        wait_for(lambda: drain.waiting(client, 1), timeout_s=60)
        sent, next_s = 0, time.monotonic()
        deadline = next_s + seconds + WARM_UP_S
        while next_s < deadline:
            time.sleep(max(0.0, next_s - time.monotonic()))
            next_s += 0.01
            with client.pipeline(transaction=False) as pipe:
                for _ in range(10):
                    pipe.xadd(drain.STREAM, {"sent": repr(time.time())})
                pipe.execute()
            sent += 10
        wait_for(lambda: drain.finished(client, sent), timeout_s=60)
    pairs = [line.split() for line in stamps.read_text().splitlines()]
    steady_from = min(float(sent) for sent, _ in pairs) + WARM_UP_S
    return [float(lag) for sent, lag in pairs if float(sent) >= steady_from]


def plain_seconds(processes: int, calls: int, n: int) -> float:
    """Seconds a multiprocessing pool of `processes` takes for `calls` of primes(n),
    handed out one at a time (the pool is started before the clock)."""
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        started = time.perf_counter()
        pool.map(primes, [n] * calls, chunksize=1)
        return time.perf_counter() - started
