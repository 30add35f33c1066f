"""A user's own task module: the end-to-end tests load it through TASK_MODULES."""

import os
import time
from pathlib import Path

from consumer import task


@task
def resize(path: str, width: int) -> dict[str, object]:
    return {"path": path, "width": width, "thumbnail": f"{path}@{width}"}


@task(name="math.add")
def add(a: int, b: int) -> int:
    return a + b


@task
def slow(n: int, seconds: float, mark: str = "") -> int:
    """Sleep; first touch `mark` (a path), so a test knows the task has started."""
    if mark:
        Path(mark).touch()
    time.sleep(seconds)
    return n


@task
def explode(**payload: object) -> None:
    raise RuntimeError("this task always fails")


def _sum_rate() -> float:
    """How many integers `sum(range(n))` adds per second here (one C call)."""
    started = time.perf_counter()
    sum(range(200_000))
    return 200_000 / max(time.perf_counter() - started, 1e-6)


SUM_RATE = _sum_rate()


@task
def gil(token: str, seconds: float, runs: str) -> str:
    """Hold the GIL for about `seconds` in one C call (no thread runs meanwhile), after
    noting the run in the file `runs` (O_APPEND: a line per run, even if killed)."""
    fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{token}\n".encode())
    os.close(fd)
    sum(range(int(SUM_RATE * seconds)))
    return token


@task
def fails_until(fixed: str) -> str:
    """Fails until the file `fixed` exists: a bug, then its fix (for replays)."""
    if not Path(fixed).exists():
        raise RuntimeError("not fixed yet")
    return "fixed"
