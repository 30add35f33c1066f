"""A user's own task module: the end-to-end tests load it through TASK_MODULES."""

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
