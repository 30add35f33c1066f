"""Tasks used only by the benchmark (TASK_MODULES=bench.tasks)."""

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
    path = Path(os.environ["BENCH_STAMP_DIR"]) / f"{os.getpid()}.starts"
    with path.open("a") as out:
        out.write(f"{started - sent:.6f}\n")
