"""`python -m bench [--quick] [--repeat N]`: one table of the pipeline against the raw
redis-py limit on the same Redis, all measured in this run, and the built images' sizes
and start times. Ratios are what count: the machine is noisy, so each figure is the
median of N runs, with the spread beside it. Then the console's page times
(bench/console.py)."""

import argparse
import functools
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import console, measure, raw
from harness.processes import Service, free_port, http_ok, wait_for
from harness.redis_server import RedisServer
from scripts import images

# The raw limit and the pipeline measured on one Redis with AOF, fsync once a second.
EVERYSEC = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction")  # fmt: skip


@dataclass(frozen=True)
class Size:
    messages: int
    latency_s: float
    primes_tasks: int
    primes_n: int
    repeat: int


FULL = Size(
    messages=100_000, latency_s=10.0, primes_tasks=24, primes_n=60_000, repeat=3
)
QUICK = Size(messages=2_000, latency_s=1.0, primes_tasks=4, primes_n=5_000, repeat=1)


@dataclass
class Results:
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.figures[name])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_once(size: Size, workdir: Path, results: Results) -> None:
    server = RedisServer(workdir / "redis", EVERYSEC)
    server.start()
    client = server.client()
    port = free_port()
    env = {"REDIS_URL": server.url, "PORT": str(port), "HOST": "127.0.0.1"}
    env |= {"LOG_LEVEL": "WARNING", "MAX_MESSAGES": str(size.messages)}
    env["HTTP_WORKERS"] = "2"  # one gunicorn process per core
    env["DISPATCH_ALLOW_ANONYMOUS"] = "1"  # loopback only
    dispatcher = Service("dispatcher", env, workdir / "dispatcher.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{base}/healthz"), timeout_s=30)
        _measure(size, workdir, results, server.url, base, client, dispatcher)
    finally:
        dispatcher.stop(show_log=False)
        client.close()
        server.kill()


def _measure(
    size: Size, workdir: Path, results: Results, url: str, base: str,
    client: redis.Redis, dispatcher: Service,
) -> None:  # fmt: skip
    n = size.messages
    results.add("raw xadd", raw.xadd_rate(url, n))
    results.add("raw consume 1", raw.consume_rate(url, n, 1))
    results.add("raw consume 2", raw.consume_rate(url, n, 2))
    client.flushall()
    results.add("dispatch one", measure.dispatch_rate(base, n, n, threads=1))
    client.flushall()
    results.add("dispatch many", measure.dispatch_rate(base, n, 100, threads=8))
    results.add("dispatcher rss", measure.peak_rss(dispatcher.pid))
    alone, pair = (
        measure.drain(url, client, n, workers, workdir) for workers in (1, 2)
    )
    results.add("drain 1", alone.rate)
    results.add("drain 2", pair.rate)
    results.add("consumer rss", max(alone.peak_rss, pair.peak_rss))
    results.add("redis memory", pair.memory_after)
    starts, acks = measure.latencies(base, url, client, size.latency_s, workdir)
    wakes = raw.wake_latencies(url, size.latency_s)
    for name, values in (("start", starts), ("ack", acks), ("raw wake", wakes)):
        for share in (0.5, 0.95, 0.99, 1.0):
            results.add(
                f"{name} p{round(share * 100)}", percentile(values, share) * 1000
            )
    args = (url, client)
    one = measure.primes_seconds(*args, 1, size.primes_tasks, size.primes_n, workdir)
    two = measure.primes_seconds(*args, 2, size.primes_tasks, size.primes_n, workdir)
    results.add("primes speed-up", one / two)


def measure_images(engine: str, tag: str, results: Results) -> None:
    """The built images (`make images`): sizes, and run to ready; none if not built."""
    try:
        figures = images.measure(engine, tag)
    except (images.ImageError, OSError) as error:
        print(f"images not measured: {error}", flush=True)
        return
    for service, row in zip(images.SERVICES, figures, strict=True):
        results.add(f"{service} image", row.size_bytes)
        results.add(f"{service} start", row.start_s * 1000)


def table(results: Results) -> list[str]:
    """One line per figure: name, median (with the spread over runs), target check."""
    rows = _throughput_rows(results) + _other_rows(results) + _image_rows(results)
    width = max(len(name) for name, _, _ in rows)
    return [f"{name:<{width}}  {value:>30}  {note}" for name, value, note in rows]


def _figure(results: Results, name: str, unit: str = "", scale: float = 1.0) -> str:
    values = [v / scale for v in results.figures[name]]
    spread = f" ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else ""
    return f"{statistics.median(values):,.0f}{unit}{spread}"


def _verdict(value: float, target: float, at_least: bool, unit: str = "") -> str:
    met = value >= target if at_least else value <= target
    sign = ">=" if at_least else "<="
    return f"target {sign} {target:g}{unit}: {'ok' if met else 'MISSED'}"


def _throughput_rows(results: Results) -> list[tuple[str, str, str]]:
    def against(ours: str, limit: str) -> str:
        ratio = results.median(ours) / results.median(limit)
        return f"{ratio:.2f}x of raw, " + _verdict(ratio, 0.5, at_least=True)

    figure = functools.partial(_figure, results)
    return [
        ("Raw limit: XADD, pipelines of 500", figure("raw xadd", "/s"), ""),
        ("Raw limit: consume, 1 process", figure("raw consume 1", "/s"), ""),
        ("Raw limit: consume, 2 processes", figure("raw consume 2", "/s"), ""),
        ("Dispatch: one POST of all messages", _figure(results, "dispatch one", "/s"),
         against("dispatch one", "raw xadd")),
        ("Dispatch: POSTs of 100, 8 at a time", _figure(results, "dispatch many", "/s"),
         f"{results.median('dispatch many') / results.median('raw xadd'):.2f}x of raw"),
        ("Drain: 1 python -m consumer", _figure(results, "drain 1", "/s"),
         f"{results.median('drain 1') / results.median('raw consume 1'):.2f}x of raw"),
        ("Drain: 2 python -m consumer", _figure(results, "drain 2", "/s"),
         against("drain 2", "raw consume 2")),
    ]  # fmt: skip


def _other_rows(results: Results) -> list[tuple[str, str, str]]:
    def percentiles(kind: str) -> str:
        values = [f"{results.median(f'{kind} p{p}'):.1f}" for p in (50, 95, 99, 100)]
        return "/".join(values) + " ms"

    mib = 2**20
    speed_up = results.median("primes speed-up")
    rss = results.median("consumer rss") / mib
    return [
        ("Latency dispatch->start p50/p95/p99/max", percentiles("start"),
         "p99 " + _verdict(results.median("start p99"), 5, False, " ms")),
        ("Latency dispatch->ack p50/p95/p99/max", percentiles("ack"), ""),
        ("Raw floor: XADD->XREADGROUP p50/p95/p99/max", percentiles("raw wake"),
         "plain redis-py, same pace"),
        ("primes: speed-up 1 -> 2 processes", f"{speed_up:.2f}x",
         _verdict(speed_up, 1.8, at_least=True)),
        ("Peak RSS: consumer", _figure(results, "consumer rss", " MiB", mib),
         _verdict(rss, 60, False, " MiB")),
        ("Peak RSS: dispatcher (largest process)",
         _figure(results, "dispatcher rss", " MiB", mib), ""),
        ("Redis used_memory after the drain",
         f"{results.median('redis memory') / mib:.1f} MiB", "stream trimmed to <= 1"),
    ]  # fmt: skip


def _image_rows(results: Results) -> list[tuple[str, str, str]]:
    rows = []
    for service in images.SERVICES:
        if f"{service} image" not in results.figures:
            rows.append((f"Image: {service}", "not built", "run `make images`"))
            continue
        size = _figure(results, f"{service} image", " MB", 1e6)
        start = _figure(results, f"{service} start", " ms")
        rows.append((f"Image size: {service}", size, ""))
        rows.append((f"Image run to ready: {service}", start, "readiness probe's 200"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--repeat", type=int, help="runs per figure (default 3; 1 quick)"
    )
    parser.add_argument("--images-tag", default="dev", help="the images to measure")
    parser.add_argument(
        "--engine", help="docker or podman (default: docker if it answers)"
    )
    args = parser.parse_args()
    engine = args.engine or images.detect_engine()
    size = QUICK if args.quick else FULL
    repeat = args.repeat or size.repeat
    results = Results()
    console_size = 20_000 if args.quick else 1_000_000  # pending and dead letters
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        for number in range(repeat):
            print(
                f"run {number + 1} of {repeat} ({size.messages:,} messages)...",
                flush=True,
            )
            run_once(size, Path(workdir) / str(number), results)
            measure_images(engine, args.images_tag, results)
        print("\n".join(table(results)), flush=True)
        print("\n".join(console.run(console_size, Path(workdir) / "console")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
