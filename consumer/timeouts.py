"""A task's hard timeout (`@task(timeout_s=...)`, default TASK_TIMEOUT_S).

Python code is stopped from inside: SIGALRM fires in the main thread after timeout_s and
its handler raises TaskTimeoutError in the task (a failed attempt: the retry policy
applies). A signal handler runs between bytecodes, so a call that holds the GIL (a C
extension's loop, a catastrophic regex) cannot be interrupted: the keeper process
(consumer/keeper.py) kills the worker a grace period later, its supervisor restarts it,
and the entry is reclaimed like any crash's.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from consumer.errors import TaskTimeoutError


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TaskTimeoutError in this block after `seconds` (main thread only: a
    worker driven from another thread, as some tests do, runs without)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeoutError(f"task ran past its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
