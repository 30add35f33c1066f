"""`python -m bench [--quick] [--repeat N] [--results FILE]`: one table of the pipeline,
with default settings, against the raw redis-py limit on the same Redis, all measured in
this run, and the built images' sizes and start times. Ratios are what count: the
machine is noisy, so each figure is the median of N runs, with the spread beside it.
Then the console's page times (bench/console.py) and the front door's memory and
slow-client figures (bench/frontdoor.py)."""

import argparse
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import console, frontdoor, plan
from bench.table import Results, Row, render
from harness.processes import ROOT, Service, free_port, http_ok, wait_for
from harness.redis_server import RedisServer
from scripts import images

# The raw limit and the pipeline measured on one Redis with AOF, fsync once a second.
# No automatic AOF rewrite: its fork landing in one measurement and not in another
# would be noise.
EVERYSEC = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--auto-aof-rewrite-percentage", "0",
            "--maxmemory-policy", "noeviction")  # fmt: skip


def run_once(size: plan.Size, workdir: Path, results: Results) -> None:
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
        lab = plan.Lab(size, server.url, client, base, dispatcher, workdir)
        for measurement in plan.MEASUREMENTS:
            started = time.monotonic()
            results.update(measurement(lab))
            took = time.monotonic() - started
            print(f"  {measurement.__name__}: {took:.1f} s", flush=True)
    finally:
        dispatcher.stop(show_log=False)
        client.close()
        server.kill()


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


def image_rows() -> list[Row]:
    rows = []
    for service in images.SERVICES:
        unbuilt = "not built: run `make images`"
        rows.append(Row(f"Image size: {service}", f"{service} image", unit=" MB",
                        scale=1e6, note=unbuilt))  # fmt: skip
        rows.append(Row(f"Image run to ready: {service} (readiness probe's 200)",
                        f"{service} start", unit=" ms", note=unbuilt))  # fmt: skip
    return rows


def report(size: plan.Size, results: Results, started: float, command: str) -> str:
    """RESULTS.md: how and where the figures were measured, then the table."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# `make bench` results",
        "",
        "Written by `make bench`; do not edit by hand. What each row measures and how "
        "its clock starts: [docs/performance.md](../docs/performance.md).",
        "",
        f"- Command: `{command}`, {size.repeat} runs, {time.time() - started:.0f} s; "
        f"commit `{_commit()}`; {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {os.cpu_count()} CPUs ({platform.machine()}), Python "
        f"{platform.python_version()}; load average at the end {load} "
        "(a shared machine: figures are noisy; the ratios compare figures of one run)",
        "",
        *render(plan.rows(size) + image_rows(), results),
        "",
    ]
    return "\n".join(lines)


def _commit() -> str:
    """The code measured: `git describe` of the working tree ("-dirty" if edited)."""
    git = shutil.which("git")
    if not git:
        return "unknown"
    described = subprocess.run(
        [git, "describe", "--always", "--dirty"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return described.stdout.strip() or "unknown"


def run_all(size: plan.Size, engine: str, images_tag: str) -> Results:
    """Every run, each on a Redis and a dispatcher of its own, then the images."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        for number in range(size.repeat):
            print(f"run {number + 1} of {size.repeat}...", flush=True)
            run_once(size, Path(workdir) / str(number), results)
            measure_images(engine, images_tag, results)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--repeat", type=int, help="runs per figure (default 3; 1 quick)"
    )
    parser.add_argument("--results", type=Path, help="write the table to this file")
    parser.add_argument("--images-tag", default="dev", help="the images to measure")
    parser.add_argument(
        "--engine", help="docker or podman (default: docker if it answers)"
    )
    args = parser.parse_args()
    engine = args.engine or images.detect_engine()
    size = plan.QUICK if args.quick else plan.FULL
    size = dataclasses.replace(size, repeat=args.repeat or size.repeat)
    started = time.time()
    results = run_all(size, engine, args.images_tag)
    text = report(size, results, started, " ".join(["python -m bench", *sys.argv[1:]]))
    print(text, flush=True)
    if args.results:
        args.results.write_text(text)
    console_size = 5_000 if args.quick else 1_000_000  # pending and dead letters
    with tempfile.TemporaryDirectory(prefix="bench-console-") as workdir:
        print("\n".join(console.run(console_size, Path(workdir))))
    with tempfile.TemporaryDirectory(prefix="bench-frontdoor-") as workdir:
        print("\n".join(frontdoor.run(args.quick, Path(workdir))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
