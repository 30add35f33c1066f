"""Tasks used only by the benchmark (TASK_MODULES=bench.tasks)."""

import functools
import os
import time
from pathlib import Path

from consumer import task


@task(name="bench.noop")
def noop() -> None:
    """Nothing: what is left is the pipeline's own cost per entry."""


@task(name="bench.stamp")
def stamp(sent: float) -> None:
    """Record how long after it was sent this task started (BENCH_STAMP_DIR)."""
    started = time.time()
    os.write(_stamp_file(), f"{sent:.6f} {started - sent:.6f}\n".encode())


@task(name="bench.due")
def stamp_due(due: float) -> None:
    """Record how long after its due time (a delayed task's run_at) it started."""
    started = time.time()
    os.write(_stamp_file(), f"{due:.6f} {started - due:.6f}\n".encode())


@functools.cache
def _stamp_file() -> int:
    """Opened once: an open() per task would delay the next entry's start."""
    path = Path(os.environ["BENCH_STAMP_DIR"]) / f"{os.getpid()}.starts"
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
