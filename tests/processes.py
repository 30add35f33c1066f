"""Real processes for end-to-end tests: the services, and a redis-server we can kill."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import eventually, free_port

ROOT = Path(__file__).resolve().parent.parent


class Service:
    """A `python -m <module>` process with its output in a log file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
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

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        print(f"--- {self.log_path.name} ---\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class RedisServer:
    """A redis-server of the test's own, with AOF, that can be killed and restarted."""

    def __init__(self, data_dir: Path, fsync: str = "always") -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.fsync = fsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.data_dir), "--save", "", "--appendonly", "yes"]
        command += ["--appendfsync", self.fsync, "--logfile", "redis.log"]
        self.process = subprocess.Popen(command)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        eventually(lambda: _pings(client))
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
