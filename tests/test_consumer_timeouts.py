"""TaskTimer: each task held to its own timeout, with the interval timer set once a
batch rather than once a task."""

import signal
import threading
import time

import pytest

from consumer.errors import TaskTimeoutError
from consumer.timeouts import TaskTimer


def busy(seconds: float) -> None:
    """Run Python bytecode for `seconds` (a signal handler runs between them)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


def run(timer: TaskTimer, timeout_s: float, seconds: float) -> bool:
    """One task of `seconds` under `timeout_s`; whether it was stopped."""
    try:
        timer.start(timeout_s)
        try:
            busy(seconds)
        finally:
            timer.stop()
    except TaskTimeoutError:
        return True
    return False


def count_settings(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every value the interval timer is set to, from here on."""
    values: list[float] = []
    real = signal.setitimer

    def setitimer(which: int, seconds: float, interval: float = 0.0) -> object:
        values.append(seconds)
        return real(which, seconds, interval)

    monkeypatch.setattr(signal, "setitimer", setitimer)
    return values


def test_task_timer_stops_a_task_past_its_timeout() -> None:
    timer = TaskTimer()
    with timer.armed():
        assert run(timer, 0.02, 0.09)


def test_task_timer_sets_the_timer_once_for_tasks_of_one_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = count_settings(monkeypatch)
    timer = TaskTimer()
    with timer.armed():
        stopped = [run(timer, 60.0, 0) for _ in range(100)]
    assert not any(stopped)
    assert settings == [60.0, 0]  # set by the first task, cleared after the batch


def test_task_timer_holds_a_later_task_to_its_own_timeout() -> None:
    timer = TaskTimer()
    with timer.armed():
        # The first task's timer fires during the second, which is not yet due: set
        # again for the rest of the second's time, it still stops it once due.
        assert not run(timer, 0.05, 0.03)
        started = time.monotonic()
        assert run(timer, 0.05, 0.09)
        assert time.monotonic() - started >= 0.05


def test_task_timer_sets_the_timer_again_for_a_shorter_timeout() -> None:
    timer = TaskTimer()
    with timer.armed():
        assert not run(timer, 60.0, 0)
        assert run(timer, 0.02, 0.09)


def test_task_timer_does_nothing_when_it_fires_between_tasks() -> None:
    timer = TaskTimer()
    with timer.armed():
        assert not run(timer, 0.02, 0)
        busy(0.04)  # fires here, between tasks: nothing raised
        assert run(timer, 0.02, 0.09)  # and the next task is timed again


def test_task_timer_restores_the_handler_and_clears_the_timer() -> None:
    before = signal.getsignal(signal.SIGALRM)
    timer = TaskTimer()
    with timer.armed():
        run(timer, 60.0, 0)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_task_timer_off_the_main_thread_times_nothing() -> None:
    stopped: list[bool] = []

    def batch() -> None:
        timer = TaskTimer()
        with timer.armed():
            stopped.append(run(timer, 0.01, 0.03))

    thread = threading.Thread(target=batch)
    thread.start()
    thread.join(timeout=5)
    assert stopped == [False]
