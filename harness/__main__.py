"""`make run` (`python -m harness`): a private Redis (AOF, fsync always, under .run/),
the dispatcher, WORKERS consumers and, when installed, Prometheus; until Ctrl-C.

Ctrl-C stops the dispatcher, then the consumers (each finishes the entry in hand), then
Redis; a second Ctrl-C kills what is left at once. Settings come from the environment:
PORT, WORKERS, METRICS_PORT (the first consumer's; 0 turns metrics and Prometheus off),
REDIS_URL (use that Redis instead of starting one), REDIS_PORT, RUN_DIR, and whatever
the services read themselves. The addresses chosen are written to RUN_DIR/pipeline.env,
where `pipeline` finds them.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from harness.processes import port_is_free, terminate
from harness.prometheus import start_prometheus
from harness.stack import Stack

STOP_GRACE_S = 70.0  # longer than the dispatcher's graceful timeout for paced requests


class RunError(Exception):
    """Something the local stack needs is missing or busy; the message says what."""


class LocalRun:
    def __init__(self, env: dict[str, str], run_dir: Path) -> None:
        self.env, self.run_dir = env, run_dir
        port = int(env.get("PORT", "8000"))
        if not port_is_free(port):
            raise RunError(f"port {port} is busy: stop what uses it or set PORT=...")
        redis_url = env.get("REDIS_URL") or None
        if not redis_url and not shutil.which("redis-server"):
            raise RunError("redis-server is not installed: run `make setup` (apt)")
        redis_port = (
            None
            if redis_url
            else int(env.get("REDIS_PORT") or 0)
            or next(filter(port_is_free, range(6380, 6480)))
        )
        self.stack = Stack(
            run_dir, consumers=0, redis_url=redis_url, redis_port=redis_port,
            port=port, dispatcher_env=env, consumer_env=env, log_files=False,
        )  # fmt: skip
        base = int(env.get("METRICS_PORT", "9100"))
        workers = int(env.get("WORKERS", "2"))
        self.metrics_ports = (
            [base + i for i in range(workers)] if base else [0] * workers
        )
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.prometheus_url: str | None = None

    def start(self) -> None:
        self.stack.start()
        for number, port in enumerate(self.metrics_ports, start=1):
            self.stack.start_consumer(f"c{number}", METRICS_PORT=str(port))
        served = [port for port in self.metrics_ports if port]
        if shutil.which("prometheus") and served:
            targets = {"dispatcher": [f"127.0.0.1:{self.stack.port}"],
                       "consumer": [f"127.0.0.1:{p}" for p in served]}  # fmt: skip
            self.prometheus, self.prometheus_url = start_prometheus(
                self.run_dir, targets
            )
        self.record()

    def record(self) -> None:
        """Where `pipeline` (the CLI) finds this stack: RUN_DIR/pipeline.env."""
        (self.run_dir / "pipeline.env").write_text(
            "# written by `make run`; `pipeline` reads it when REDIS_URL is unset\n"
            f"REDIS_URL={self.stack.url}\nDISPATCHER_URL={self.stack.base_url}\n"
        )

    def processes(self) -> "list[subprocess.Popen[bytes]]":
        return self.stack.processes() + ([self.prometheus] if self.prometheus else [])

    def exited(self) -> bool:
        return any(process.poll() is not None for process in self.processes())

    def stop(self) -> None:
        self.stack.stop(STOP_GRACE_S)
        if self.prometheus:
            terminate([self.prometheus], STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL each process's group (each started in a session of its own), so a
        child it forked dies with it: the dispatcher's gunicorn worker, which would
        otherwise notice its parent gone only at its next check, a second later."""
        for process in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def banner(self) -> str:
        stack, cli = self.stack, "redis-cli -u " + self.stack.url
        served = [p for p in self.metrics_ports if p]
        metrics = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in served) or "off"
        prometheus = self.prometheus_url or "not installed (apt-get install prometheus)"
        curl = f"curl -X POST http://localhost:{stack.port}/dispatch"
        return f"""
  Redis        {stack.url}   ({cli})
  Dispatcher   {stack.base_url}   (metrics: {stack.base_url}/metrics)
               WITHOUT authentication (DISPATCH_ALLOW_ANONYMOUS=1), on loopback only
  Console      http://127.0.0.1:{stack.port}/ui/   (operator, no sign-in on loopback)
  Consumers    {len(self.metrics_ports)} processes   (metrics: {metrics})
  Prometheus   {prometheus}

  Try it:
    {curl} -H "Content-Type: application/json" \\
         -d '{{"num_messages": 10, "delay": 0.1}}'
  Inspect, in another terminal from this directory (it reads .run/pipeline.env):
    .venv/bin/pipeline status
    {cli} XINFO GROUPS tasks
    {cli} XPENDING tasks workers - + 10
    {cli} XRANGE {{tasks}}:dead - +

  Ctrl-C stops everything (a second Ctrl-C does not wait).
"""


def main() -> int:
    stopping = threading.Event()
    run: LocalRun | None = None

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set() and run is not None:
            print("second Ctrl-C: killing the stack", flush=True)
            run.kill()
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    run_dir = Path(os.environ.get("RUN_DIR", ".run")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run = LocalRun(dict(os.environ), run_dir)
        run.start()
        print(run.banner(), flush=True)
        while not stopping.wait(0.2):
            if run.exited():
                print("a process of the stack exited on its own; stopping the rest")
                return 1
        return 0
    except (RunError, TimeoutError, FileNotFoundError) as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    finally:
        if run is not None:
            print("stopping: dispatcher, consumers, then Redis", flush=True)
            run.stop()


if __name__ == "__main__":
    sys.exit(main())
