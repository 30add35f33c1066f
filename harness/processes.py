"""Process control: free ports, polling with a deadline, and `python -m` services in a
session of their own that die with the thread that started them."""

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies
T = TypeVar("T")


def free_port(below: int = 65536) -> int:
    """A loopback port nothing listens on. Redis Cluster needs port + 10000 free too,
    so cluster nodes ask for one below 55536."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port < below:
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


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


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    command: list[str], env: dict[str, str], output: IO[bytes] | None = None
) -> "subprocess.Popen[bytes]":
    """A child in a session of its own (a Ctrl-C reaches only us, and we stop the
    children in order), sent SIGTERM by Linux if the thread that started it dies
    (prctl PDEATHSIG), so nothing outlives a killed harness."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


class Service:
    """A `python -m <module>` process, its output in a log file (or, without one, on
    our own stdout)."""

    def __init__(
        self,
        module: str,
        env: dict[str, str],
        log_path: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """`prefix` runs it through another command (`ip netns exec NAME`)."""
        self.module = module
        self.log_path = log_path
        self._log = log_path.open("ab") if log_path else None
        self.process = spawn(
            [*prefix, sys.executable, "-m", module],
            {**os.environ, "PYTHONUNBUFFERED": "1", **env},
            self._log,
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
        terminate([self.process], grace_s)
        if self._log:
            self._log.close()
        if show_log and self.log_path:
            print(f"--- {self.log_path.name} ---\n{self.log_text()[-4000:]}")
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def terminate(processes: "list[subprocess.Popen[bytes]]", grace_s: float) -> None:
    """SIGTERM the processes together (waking stopped ones), then wait for each;
    SIGKILL what outlives grace_s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped process cannot exit
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
