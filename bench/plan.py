"""What `make bench` measures: the sizes, the measurements of one run (each a function
returning named figures) and the rows of the table. A new row is one more function in
MEASUREMENTS and one more Row."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import delayed, drain, fairness, keeper, measure, partitions, raw
from bench.table import Row, Target
from harness.processes import Service
from pipeline_core.redis_settings import RedisSettings
from pipeline_core.sending import Sender, SenderSettings


@dataclass(frozen=True)
class Size:
    messages: int  # the drains and dispatches
    backlog: int  # the long drain
    latency_s: float
    work: fairness.Work
    one_by_one: int  # XADDs one per round trip
    repeat: int
    delayed: int  # delayed tasks due at one instant (the promotion rate)
    due_s: float  # how long tasks fall due at 1,000 a second (their lateness)


FULL = Size(100_000, 1_000_000, 10.0, fairness.Work(40, 0.1, 30_000), 20_000, 3,
            delayed=100_000, due_s=10.0)  # fmt: skip
QUICK = Size(2_000, 10_000, 1.0, fairness.Work(6, 0.05, 3_000), 500, 1,
             delayed=2_000, due_s=1.0)  # fmt: skip


@dataclass(frozen=True)
class Lab:
    """One run's Redis (AOF, fsync every second) and dispatcher."""

    size: Size
    url: str
    client: redis.Redis
    base: str  # the dispatcher's URL
    dispatcher: Service
    workdir: Path

    def logs(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def writes(lab: Lab) -> dict[str, float]:
    return {
        "raw xadd": raw.xadd_rate(lab.url, lab.size.messages),
        "raw xadd one": raw.xadd_one_rate(lab.url, lab.size.one_by_one),
    }


def dispatches(lab: Lab) -> dict[str, float]:
    n = lab.size.messages
    lab.client.flushall()
    one = measure.dispatch_rate(lab.base, n, n, threads=1)
    lab.client.flushall()
    many = measure.dispatch_rate(lab.base, n, 100, threads=8)
    rss = drain.peak_rss(lab.dispatcher.pid)
    return {"dispatch one": one, "dispatch many": many, "dispatcher rss": rss}


def pipeline_drain(lab: Lab, workers: int, count: int) -> drain.Drain:
    """`count` no-op entries drained by `workers` consumers, default settings."""
    drain.fresh_group(lab.client)
    with drain.consumers(lab.url, workers, lab.logs(f"drain-{count}")) as services:
        return drain.drain(lab.client, services, count)


def drains(lab: Lab) -> dict[str, float]:
    n, figures = lab.size.messages, {}
    for workers in (1, 2):
        raw_s = raw.drain_seconds(lab.url, lab.client, n, workers, lab.logs("raw"))
        figures[f"raw drain {workers}"] = n / raw_s
        seconds = pipeline_drain(lab, workers, n).seconds
        figures[f"drain {workers}"] = n / seconds
        figures[f"task us {workers}"] = seconds * workers / n * 1e6  # per consumer
    figures["keeper us"] = keeper.beacon_seconds_per_task(n) * 1e6
    return figures


def backlog(lab: Lab) -> dict[str, float]:
    done = pipeline_drain(lab, 2, lab.size.backlog)
    lab.client.flushall()  # its results: a million hash fields
    return {
        "drain backlog": lab.size.backlog / done.seconds,
        "consumer rss": done.peak_rss,
        "bytes per entry": done.bytes_per_entry,
    }


def latencies(lab: Lab) -> dict[str, float]:
    seconds = lab.size.latency_s
    starts, acks = measure.latencies(
        lab.base, lab.url, lab.client, seconds, lab.logs("latency")
    )
    wakes = raw.wake_latencies(lab.url, lab.client, seconds, lab.logs("wake"))
    figures = {}
    for name, values in (("start", starts), ("ack", acks), ("raw wake", wakes)):
        for share in (0.5, 0.95, 0.99, 1.0):
            key = f"{name} p{round(share * 100)}"
            figures[key] = percentile(values, share) * 1000
    return figures


def sends(lab: Lab) -> dict[str, float]:
    """The Python API (pipeline_core/sending.py) against the same Redis: send_many of
    the whole batch, then send one by one."""
    settings = SenderSettings(
        redis=RedisSettings(url=lab.url), max_backlog=10 * lab.size.messages
    )
    sender = Sender(settings)
    payloads = [{"seq": seq} for seq in range(lab.size.messages)]
    try:
        lab.client.flushall()
        started = time.perf_counter()  # the payloads exist: sending can start
        sender.send_many("demo", payloads)
        many_s = time.perf_counter() - started
        lab.client.flushall()
        one = lab.size.one_by_one
        started = time.perf_counter()
        for seq in range(one):
            sender.send("demo", {"seq": seq})
        one_s = time.perf_counter() - started
    finally:
        sender.close()
        lab.client.flushall()
    return {"send many": lab.size.messages / many_s, "send one": one / one_s}


def fairness_figures(lab: Lab) -> dict[str, float]:
    return fairness.measure(lab.url, lab.client, lab.size.work, lab.logs("fairness"))


def delayed_figures(lab: Lab) -> dict[str, float]:
    """Delayed tasks (bench/delayed.py): promoted per second; how late they start."""
    log_dir = lab.logs("delayed")
    figures = delayed.promotion(lab.url, lab.client, lab.size.delayed, log_dir)
    late = delayed.lateness(lab.url, lab.client, lab.size.due_s, log_dir)
    lab.client.flushall()
    for share in (0.5, 0.99, 1.0):
        figures[f"lateness p{round(share * 100)}"] = percentile(late, share) * 1000
    return figures


def partition_figures(lab: Lab) -> dict[str, float]:
    """One queue over a local cluster, PARTITIONS 1, 3, 6 (bench/partitions.py)."""
    return partitions.measure(lab.size.messages, lab.logs("partitions"))


MEASUREMENTS: tuple[Callable[[Lab], dict[str, float]], ...] = (
    writes, sends, dispatches, drains, backlog, latencies, fairness_figures,
    delayed_figures, partition_figures,
)  # fmt: skip


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


AT_LEAST_HALF = (Target("ratio", 0.5),)


def rows(size: Size) -> list[Row]:
    """The issue's table first (default settings throughout), then the rest."""
    return [
        *_drain_and_fairness_rows(size), *_issue_rows(size), *_time_rows(size),
        *_other_rows(size), *partitions.rows(size.messages),
    ]  # fmt: skip


def _drain_and_fairness_rows(size: Size) -> list[Row]:
    n, w = size.messages, size.work
    return [
        Row(f"Drain of {n:,}, 2 `python -m consumer`, no-op tasks, results stored",
            "drain 2", "raw drain 2", "raw, 2 processes", targets=AT_LEAST_HALF),
        Row(f"Drain of {n:,}, 1 `python -m consumer`", "drain 1", "raw drain 1",
            "raw, 1 process", targets=AT_LEAST_HALF),
        Row(f"Fairness: {w.tasks} sleeps of {w.sleep_s * 1000:g} ms at once, "
            "2 consumers: makespan", "sleep makespan", "sleep ideal",
            "ideal (work / 2)", " s", digits=2, targets=(Target("ratio", 1.15, True),)),
        Row(f"Fairness: {w.tasks} `primes({w.primes_n})` at once, 2 consumers: "
            "makespan", "primes 2", "plain primes 2", "2 plain processes", " s",
            digits=2, targets=(Target("ratio", 1.15, True),)),
        Row(f"`primes` speed-up, 1 -> 2 consumers ({w.tasks} calls)", "speed-up",
            "plain speed-up", "1 -> 2 plain processes", "x", digits=2,
            targets=(Target("ratio", 0.9),)),
    ]  # fmt: skip


def _issue_rows(size: Size) -> list[Row]:
    n = size.messages
    return [
        Row(f"`send_many` from Python, {n:,} payloads", "send many", "raw xadd",
            "raw XADD, pipelines of 500", targets=AT_LEAST_HALF),
        Row("`send` from Python, one message per call", "send one", "raw xadd one",
            "raw XADD, one per round trip", targets=AT_LEAST_HALF),
        Row("Dispatch -> start p99, 1,000 msg/s over HTTP", "start p99",
            "raw wake p99", "raw XADD -> XREADGROUP p99", " ms", digits=1,
            targets=(Target("value", 5, True), Target("difference", 2, True))),
        Row(f"Drain of a backlog of {size.backlog:,}, 2 consumers", "drain backlog",
            "drain 2", f"the drain of {n:,}", targets=(Target("ratio", 0.8),)),
        Row(f"Consumer peak RSS, backlog of {size.backlog:,}", "consumer rss",
            unit=" MiB", scale=2**20, targets=(Target("value", 60, True),)),
        Row("Redis memory per queued entry (no-op payload)", "bytes per entry",
            unit=" B"),
        Row("Keeper: the worker's writes for it per task (what keeps a GIL-bound "
            "task's claims)", "keeper us", "task us 2",
            "a no-op task's whole time in the drain by 2", " µs", digits=2),
    ]  # fmt: skip


def _time_rows(size: Size) -> list[Row]:
    """Delayed tasks, 2 idle consumers with default settings (CLOCK_INTERVAL_MS 200)."""
    return [
        Row(f"Delayed tasks promoted onto the stream, {size.delayed:,} due at once",
            "promotion", targets=(Target("value", 10_000),)),
        Row(f"Delayed tasks promoted and run, {size.delayed:,} due at once",
            "promotion drain", "drain 2", f"the drain of {size.messages:,}"),
        Row("Delayed task due -> start p99, 1,000 due/s", "lateness p99", unit=" ms",
            digits=1, targets=(Target("value", 1000, True),)),
        *(Row(f"Delayed task due -> start p{p}", f"lateness p{p}", unit=" ms",
              digits=1) for p in (50, 100)),
    ]  # fmt: skip


def _other_rows(size: Size) -> list[Row]:
    n = size.messages
    return [
        Row(f"Dispatch: one POST of {n:,} messages", "dispatch one", "raw xadd",
            "raw XADD, pipelines of 500", targets=(Target("ratio", 0.5),)),
        Row("Dispatch: POSTs of 100, 8 at a time", "dispatch many", "raw xadd",
            "raw XADD, pipelines of 500"),
        *(Row(f"Dispatch -> start p{p}", f"start p{p}", f"raw wake p{p}",
              "raw XADD -> XREADGROUP", " ms", digits=1) for p in (50, 95, 100)),
        *(Row(f"Dispatch -> ack p{p}", f"ack p{p}", unit=" ms", digits=1)
          for p in (50, 99)),
        Row("Dispatcher peak RSS (largest process)", "dispatcher rss", unit=" MiB",
            scale=2**20),
    ]  # fmt: skip
