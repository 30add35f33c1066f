"""The raw limit: plain redis-py with batched stream commands, no pipeline around it.
XADD in pipelines of 500; XREADGROUP COUNT 500 and one XACK per batch per consumer."""

import multiprocessing
import time
from multiprocessing.synchronize import Event

import redis
from redis.typing import EncodableT, FieldT

from consumer.message import read_entries

BATCH = 500
STREAM, GROUP = "bench:raw", "raw"
FIELDS: dict[FieldT, EncodableT] = {"task": "bench.noop", "payload": "{}"}


def xadd_rate(url: str, count: int) -> float:
    """Entries per second appended in pipelines of BATCH."""
    with redis.Redis.from_url(url) as client:
        client.delete(STREAM)
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            with client.pipeline(transaction=False) as pipe:
                for _ in range(min(BATCH, count - first)):
                    pipe.xadd(STREAM, FIELDS)
                pipe.execute()
        return count / (time.perf_counter() - started)


def consume_rate(url: str, count: int, consumers: int) -> float:
    """Entries per second read and acknowledged by `consumers` processes together."""
    with redis.Redis.from_url(url) as client:
        client.delete(STREAM)
        xadd_rate(url, count)
        client.xgroup_create(STREAM, GROUP, "0")
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [
        context.Process(target=_consume, args=(url, f"raw-{n}", start))
        for n in range(consumers)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.3)  # let every process connect before the clock starts
    started = time.perf_counter()
    start.set()
    for worker in workers:
        worker.join()
    return count / (time.perf_counter() - started)


def _consume(url: str, name: str, start: Event) -> None:
    client = redis.Redis.from_url(url)
    start.wait()
    while True:
        # Everything was written before the clock started: an empty read means done.
        entries = read_entries(
            client.xreadgroup(GROUP, name, {STREAM: ">"}, count=BATCH)
        )
        if not isinstance(entries, list) or not entries:
            return
        client.xack(STREAM, GROUP, *(entry_id for entry_id, _ in entries))


def wake_latencies(url: str, seconds: float) -> list[float]:
    """The floor for dispatch->start: seconds from a plain XADD (10 every 10 ms) to the
    moment a plain consumer, blocked in XREADGROUP in another process, has it."""
    with redis.Redis.from_url(url) as client:
        client.delete(STREAM)
        client.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[list[float]] = context.Queue()
    reader = context.Process(target=_receive, args=(url, results))
    reader.start()
    time.sleep(0.3)  # the reader is blocked in XREADGROUP
    with redis.Redis.from_url(url) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with client.pipeline(transaction=False) as pipe:
                for _ in range(10):
                    pipe.xadd(STREAM, {"sent": repr(time.time())})
                pipe.execute()
            time.sleep(0.01)
    latencies = results.get(timeout=30)
    reader.join()
    return latencies


def _receive(url: str, results: "multiprocessing.Queue[list[float]]") -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    latencies: list[float] = []
    while True:
        entries = read_entries(
            client.xreadgroup(GROUP, "wake", {STREAM: ">"}, count=BATCH, block=500)
        )
        if not isinstance(entries, list) or not entries:
            results.put(latencies)  # nothing for half a second: the writer is done
            return
        now = time.time()
        latencies += [now - float(fields["sent"]) for _, fields in entries]
