"""`make run`: a private Redis (AOF under .run/), the dispatcher and WORKERS consumers.

Runs until Ctrl-C (or SIGTERM), then stops the dispatcher, the consumers (each
finishes the entry in hand) and Redis, in that order. Settings come from the
environment: PORT, WORKERS, METRICS_PORT (the first consumer's; 0 turns metrics and
Prometheus off),
REDIS_URL (use that Redis instead of starting one), REDIS_PORT, RUN_DIR, and whatever
the services read themselves.
"""

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies
STOP_GRACE_S = 70.0  # longer than the dispatcher's graceful timeout for paced requests
Process = subprocess.Popen[bytes]


class RunError(Exception):
    """Something the local stack needs is missing or busy; the message says what."""


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def redis_answers(port: int) -> bool:
    ping = ["redis-cli", "-p", str(port), "ping"]
    done = subprocess.run(ping, capture_output=True, text=True, check=False)
    return done.stdout.strip() == "PONG"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until(check: Callable[[], bool], what: str, stopping: threading.Event) -> None:
    for _ in range(300):  # 15 s
        if check() or stopping.is_set():
            return
        stopping.wait(0.05)
    raise RunError(f"{what} did not come up within 15 s")


def start(command: list[str], env: dict[str, str]) -> Process:
    # A session of its own: Ctrl-C reaches only this script, which then stops the
    # children in order (dispatcher, consumers, Redis) instead of all at once. And if
    # this script dies without stopping them (SIGKILL), Linux sends them SIGTERM.
    return subprocess.Popen(
        command, env=env, start_new_session=True, preexec_fn=_terminate_with_parent
    )


def _terminate_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_redis(run_dir: Path, port: int) -> Process:
    if not shutil.which("redis-server"):
        raise RunError("redis-server is not installed: run `make setup` (it uses apt)")
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return start(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--maxmemory-policy", "noeviction", "--logfile", "redis.log"],
        dict(os.environ),
    )  # fmt: skip


def start_prometheus(
    run_dir: Path, targets: dict[str, list[str]]
) -> tuple[Process, str]:
    """A Prometheus scraping the stack every 5 s, with the alert rules loaded."""
    jobs = [
        {"job_name": job, "static_configs": [{"targets": t}]}
        for job, t in targets.items()
    ]
    rules = Path(__file__).resolve().parent.parent / "prometheus" / "alerts.yml"
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "prometheus.yml").write_text(
        json.dumps(config, indent=2)
    )  # JSON is YAML
    port = next(filter(port_is_free, range(9090, 9190)))
    process = start(
        ["prometheus", f"--config.file={run_dir / 'prometheus.yml'}",
         f"--storage.tsdb.path={run_dir / 'prometheus'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        dict(os.environ),
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def stop(processes: list[Process]) -> None:
    """SIGTERM a stage's processes together, then wait (SIGKILL after the grace)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def banner(
    redis_url: str,
    port: int,
    workers: int,
    metrics_ports: list[int],
    prometheus: str | None,
) -> str:
    cli = "redis-cli -u " + redis_url
    metrics = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in metrics_ports) or "off"
    if prometheus is None:
        prometheus = "not installed (apt-get install prometheus)"
    return f"""
  Redis        {redis_url}   ({cli})
  Dispatcher   http://127.0.0.1:{port}   (metrics: http://127.0.0.1:{port}/metrics)
               WITHOUT authentication (DISPATCH_ALLOW_ANONYMOUS=1), on loopback only
  Consumers    {workers} processes   (metrics: {metrics})
  Prometheus   {prometheus}

  Try it:
    curl -X POST http://localhost:{port}/dispatch -H "Content-Type: application/json" \\
         -d '{{"num_messages": 10, "delay": 0.1}}'
  Inspect:
    {cli} XINFO GROUPS tasks
    {cli} XPENDING tasks workers - + 10
    {cli} XRANGE tasks:dead - +

  Ctrl-C stops everything.
"""


def start_stack(
    env: dict[str, str], stopping: threading.Event, stages: list[list[Process]]
) -> None:
    """Start Redis (unless REDIS_URL is set), the dispatcher and the consumers, into
    `stages` in stopping order as each starts, so a failure half-way through still
    stops what was started."""
    port, workers = int(env.get("PORT", "8000")), int(env.get("WORKERS", "2"))
    if not port_is_free(port):
        raise RunError(f"port {port} is busy: stop what uses it or set PORT=...")
    if not env.get("REDIS_URL"):
        redis_port = int(
            env.get("REDIS_PORT") or next(filter(port_is_free, range(6380, 6480)))
        )
        stages.append(
            [start_redis(Path(env.get("RUN_DIR", ".run")).resolve(), redis_port)]
        )
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        wait_until(lambda: redis_answers(redis_port), "redis-server", stopping)
    # No tokens locally: the dispatcher runs open, which it allows on loopback only.
    dispatcher_env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    dispatcher_env["DISPATCH_ALLOW_ANONYMOUS"] = "1"
    stages.insert(0, [start([sys.executable, "-m", "dispatcher"], dispatcher_env)])
    wait_until(
        lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), "dispatcher", stopping
    )
    base = int(env.get("METRICS_PORT", "9100"))
    metrics_ports = [base + i for i in range(workers)] if base else [0] * workers
    consumer = [sys.executable, "-m", "consumer"]
    stages.insert(
        1, [start(consumer, {**env, "METRICS_PORT": str(p)}) for p in metrics_ports]
    )
    prometheus_url = None
    if shutil.which("prometheus") and base:
        targets = {"dispatcher": [f"127.0.0.1:{port}"]}
        targets["consumer"] = [f"127.0.0.1:{p}" for p in metrics_ports]
        run_dir = Path(env.get("RUN_DIR", ".run")).resolve()
        prometheus, prometheus_url = start_prometheus(run_dir, targets)
        stages.insert(2, [prometheus])
    served = [p for p in metrics_ports if p]
    print(banner(env["REDIS_URL"], port, workers, served, prometheus_url), flush=True)


def main() -> int:
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stages: list[list[Process]] = []
    try:
        start_stack(dict(os.environ), stopping, stages)
        while not stopping.wait(0.2):
            if any(process.poll() is not None for stage in stages for process in stage):
                print("a process of the stack exited on its own; stopping the rest")
                return 1
        return 0
    except RunError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    finally:
        if stages:
            print("stopping: dispatcher, consumers, then Redis", flush=True)
        for stage in stages:
            stop(stage)


if __name__ == "__main__":
    sys.exit(main())
