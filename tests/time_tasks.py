"""Tasks for tests/test_time.py: each records what it did in TIME_TASKS_DIR (a line per
run, appended and fsynced), so the test reads the tasks' own clocks."""

import os
import re
import time
from pathlib import Path

from consumer import UnrecoverableError, task


def record(name: str, line: str) -> int:
    """Append `line` to the file `name`; how many lines it holds now."""
    path = Path(os.environ["TIME_TASKS_DIR"]) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(path.read_text().splitlines())


@task(max_retries=3, backoff_s=0.5, backoff_max_s=1.5)
def flaky(key: str, failures: int) -> int:
    """Fails its first `failures` attempts; returns the attempt that worked."""
    attempt = record(key, repr(time.time()))
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@task(max_retries=3, backoff_s=4)
def patient(key: str) -> int:
    """Fails once, then waits 4 s (past CLAIM_IDLE_MS) for its retry."""
    attempt = record(key, repr(time.time()))
    if attempt == 1:
        raise RuntimeError("first attempt fails")
    return attempt


@task(max_retries=5, backoff_s=0.1, retry_on=(KeyError,))
def picky(key: str) -> None:
    record(key, "ran")
    raise ValueError("not a KeyError: never retried")


@task(max_retries=5, backoff_s=0.1)
def hopeless(key: str) -> None:
    record(key, "ran")
    raise UnrecoverableError("the file is gone for good")


@task
def stamp(key: str) -> float:
    """Records when it started (and nothing else)."""
    now = time.time()
    record(key, f"{key} {now!r}")
    return now


@task(timeout_s=1, max_retries=1, backoff_s=0.1)
def spin(key: str) -> None:
    """A pure-Python loop that never ends: stopped at its timeout, every attempt."""
    record(key, repr(time.time()))
    while True:
        pass


@task(timeout_s=1, max_retries=0)
def backtrack(key: str) -> bool:
    """A catastrophic regex (2^40 steps). CPython's regex engine checks for signals as
    it goes, so the timeout interrupts it like Python code."""
    record(key, repr(time.time()))
    return re.match(r"(a+)+$", "a" * 40 + "b") is not None


@task(timeout_s=1, max_retries=0)
def hog(key: str) -> int:
    """One C call holding the GIL for far longer than the test (sum over a range
    checks no signal): nothing interrupts it; the keeper ends the worker."""
    record(key, repr(time.time()))
    return sum(range(10**14))
