"""`make run`: a private Redis (AOF under .run/), the dispatcher and WORKERS consumers.

Runs until Ctrl-C (or SIGTERM), then stops the dispatcher, the consumers (each
finishes the entry in hand) and Redis, in that order. Settings come from the
environment: PORT, WORKERS, METRICS_PORT (the first consumer's; 0 turns metrics off),
REDIS_URL (use that Redis instead of starting one), REDIS_PORT, RUN_DIR, and whatever
the services read themselves.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

STOP_GRACE_S = 70.0  # longer than the dispatcher's graceful timeout for paced requests


class RunError(Exception):
    """Something the local stack needs is missing or busy; the message says what."""


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def first_free_port(start: int) -> int:
    return next(port for port in range(start, start + 100) if port_is_free(port))


def wait_until(check: "Check", what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RunError(f"{what} did not come up within {timeout_s:g} s")
        time.sleep(0.05)


class Check:
    """A readiness probe: a command that must succeed, or a URL that must answer 200."""

    def __init__(
        self, command: list[str] | None = None, url: str | None = None
    ) -> None:
        self.command, self.url = command, url

    def __call__(self) -> bool:
        if self.command:
            done = subprocess.run(
                self.command, capture_output=True, text=True, check=False
            )
            return done.stdout.strip() == "PONG"
        try:
            with urllib.request.urlopen(self.url or "", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only this script, which stops the children in
    # order (dispatcher, consumers, Redis) instead of all at once.
    return subprocess.Popen(command, env=env, start_new_session=True)


def start_redis(
    run_dir: Path, env: dict[str, str]
) -> tuple[str, subprocess.Popen[bytes]]:
    if not shutil.which("redis-server"):
        raise RunError("redis-server is not installed: run `make setup` (it uses apt)")
    port = int(env.get("REDIS_PORT") or first_free_port(6380))
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    process = start(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--maxmemory-policy", "noeviction", "--logfile", "redis.log"],
        env,
    )  # fmt: skip
    wait_until(Check(command=["redis-cli", "-p", str(port), "ping"]), "redis-server")
    return f"redis://127.0.0.1:{port}/0", process


def banner(redis_url: str, port: int, metrics_ports: list[int]) -> str:
    cli = "redis-cli -u " + redis_url
    metrics = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in metrics_ports) or "off"
    return f"""
  Redis        {redis_url}   ({cli})
  Dispatcher   http://127.0.0.1:{port}   (metrics: http://127.0.0.1:{port}/metrics)
  Consumers    {len(metrics_ports) or "see WORKERS"} processes   (metrics: {metrics})

  Try it:
    curl -X POST http://localhost:{port}/dispatch -H "Content-Type: application/json" \\
         -d '{{"num_messages": 10, "delay": 0.1}}'
  Inspect:
    {cli} XINFO GROUPS tasks
    {cli} XPENDING tasks workers - + 10
    {cli} XRANGE tasks:dead - +

  Ctrl-C stops everything.
"""


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
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


def run() -> int:
    env = dict(os.environ)
    run_dir = Path(env.get("RUN_DIR", ".run")).resolve()
    port = int(env.get("PORT", "8000"))
    workers = int(env.get("WORKERS", "2"))
    metrics_base = int(env.get("METRICS_PORT", "9100"))
    if not port_is_free(port):
        raise RunError(f"port {port} is busy: stop what uses it or set PORT=...")
    redis_process = None
    if not env.get("REDIS_URL"):
        env["REDIS_URL"], redis_process = start_redis(run_dir, env)
    stages: list[list[subprocess.Popen[bytes]]] = [
        [redis_process] if redis_process else []
    ]
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        dispatcher_env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
        stages.insert(0, [start([sys.executable, "-m", "dispatcher"], dispatcher_env)])
        wait_until(Check(url=f"http://127.0.0.1:{port}/healthz"), "the dispatcher")
        metrics_ports = (
            [metrics_base + i for i in range(workers)] if metrics_base else []
        )
        consumers = [
            start(
                [sys.executable, "-m", "consumer"],
                {**env, "METRICS_PORT": str(metrics_ports[i] if metrics_ports else 0)},
            )
            for i in range(workers)
        ]
        stages.insert(1, consumers)
        print(banner(env["REDIS_URL"], port, metrics_ports), flush=True)
        while not stopping:
            if any(p.poll() is not None for stage in stages for p in stage):
                print(
                    "a process of the stack exited on its own; stopping the rest",
                    flush=True,
                )
                return 1
            time.sleep(0.2)
        return 0
    finally:
        print("stopping: dispatcher, consumers, then Redis", flush=True)
        for stage in stages:
            stop(stage)


def main() -> int:
    try:
        return run()
    except RunError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
