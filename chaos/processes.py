"""Real processes: the services as `python -m` children, and a redis-server to kill."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T], timeout_s: float = 5.0, every_s: float = 0.01
) -> T:
    """Call check until it returns something truthy; TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout_s} s (last value {value!r})")
        time.sleep(every_s)


class Service:
    """A `python -m <module>` process with its output in a log file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self, grace_s: float = 10.0, show_log: bool = True) -> int:
        """SIGTERM, then SIGKILL after grace_s; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot exit
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        if show_log:
            print(f"--- {self.log_path.name} ---\n{self.log_text()[-4000:]}")
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class RedisServer:
    """A private redis-server with AOF, that can be killed, paused and restarted."""

    def __init__(
        self, data_dir: Path, fsync: str = "always", extra: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.fsync = fsync
        self.extra = extra or []  # more redis-server options (an ACL file, TLS)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.data_dir), "--save", "", "--appendonly", "yes"]
        command += ["--appendfsync", self.fsync, "--logfile", "redis.log"]
        command += ["--maxmemory-policy", "noeviction", *self.extra]
        self.process = subprocess.Popen(command)
        wait_for(lambda: _accepts(self.port), timeout_s=10)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)


def _accepts(port: int) -> bool:
    """Whether something listens on the port (PING would need the users and TLS)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
