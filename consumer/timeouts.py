"""A task's hard timeout (`@task(timeout_s=...)`, default TASK_TIMEOUT_S).

Python code is stopped from inside: SIGALRM fires in the main thread once the running
task is past its timeout, and its handler raises TaskTimeoutError in the task (a failed
attempt: the retry policy applies). A signal handler runs between bytecodes, so a call
that holds the GIL (a C extension's loop, a catastrophic regex) cannot be interrupted:
the keeper process (consumer/keeper.py) kills the worker a grace period later, its
supervisor restarts it, and the entry is reclaimed like any crash's.
"""

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from consumer.errors import TaskTimeoutError


class TaskTimer:
    """One interval timer for the tasks of a batch, each held to its own timeout.

    Setting the timer and the handler for every task cost more than a no-op task
    itself (three system calls). So the handler is set once per batch (`armed`), and
    the timer only when it would fire too late for the task starting: tasks of one
    timeout start later and later, so the timer set for the first of a batch fires
    before any later one is due. When it fires for a task that is not yet due (an
    earlier one's timer), the handler sets it again for the rest of that task's time;
    between tasks it does nothing."""

    def __init__(self) -> None:
        self._armed = False
        self._due_s = 0.0  # monotonic: when the running task is past its time; 0: none
        self._fires_s = 0.0  # monotonic: when the timer fires; 0: not set
        self._timeout_s = 0.0

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """Around a batch: its tasks may be timed (main thread only: a worker driven
        from another thread, as some tests do, runs without)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._expired)
        self._armed = True
        try:
            yield
        finally:
            self._armed, self._due_s = False, 0.0
            if self._fires_s:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._fires_s = 0.0
            signal.signal(signal.SIGALRM, previous)

    def start(self, timeout_s: float, now: float | None = None) -> None:
        """A task starts (now, or at monotonic `now`): TaskTimeoutError in it once it
        runs past `timeout_s`."""
        now = time.monotonic() if now is None else now
        self._timeout_s, self._due_s = timeout_s, now + timeout_s
        if self._armed and not 0 < self._fires_s <= self._due_s:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            self._fires_s = self._due_s

    def stop(self) -> None:
        """The task returned or raised: nothing to interrupt until the next starts."""
        self._due_s = 0.0

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        due_s = self._due_s
        if not due_s:
            self._fires_s = 0.0  # between tasks: the next start sets the timer again
            return
        remaining_s = due_s - time.monotonic()
        if remaining_s > 0:  # set for an earlier task: this one has time left
            signal.setitimer(signal.ITIMER_REAL, remaining_s)
            self._fires_s = due_s
            return
        self._due_s = 0.0
        raise TaskTimeoutError(f"task ran past its timeout of {self._timeout_s:g} s")
