"""Tasks used only by the fault-injection harness (TASK_MODULES=chaos.tasks).

Each run appends "<token> <consumer> <unix time>" to a file of its own process under
CHAOS_RECORD_DIR *before* it returns, so the checker sees effects rather than acks. The
line goes straight to the kernel (O_APPEND), so it survives a SIGKILL of the consumer.
"""

import os
import time
from pathlib import Path

from chaos.checker import RETRIED_FAILURES
from consumer import task


def record_run(token: str) -> None:
    consumer = os.environ.get("CONSUMER_NAME", "?")
    path = Path(os.environ["CHAOS_RECORD_DIR"]) / f"{consumer}-{os.getpid()}.runs"
    _append(path, f"{token} {consumer} {time.time():.3f}\n")


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@task(name="chaos.work")
def work(token: str, seconds: float = 0.0) -> str:
    """Healthy work: takes `seconds`, then records its run."""
    if seconds:
        time.sleep(seconds)
    record_run(token)
    return token


@task(name="chaos.poison")
def poison(token: str) -> None:
    """Always raises: must end in the dead-letter stream after MAX_DELIVERIES runs."""
    record_run(token)
    raise RuntimeError("poison: this task always fails")


@task(name="chaos.flaky", max_retries=5, backoff_s=0.2, backoff_max_s=1.0)
def flaky(token: str) -> str:
    """Healthy work that fails its first RETRIED_FAILURES attempts (retried through the
    delayed set), then succeeds. Each attempt records its run, then counts itself in a
    file of its token (in that order: a kill between the two costs a run more, never
    one less)."""
    record_run(token)
    attempts = Path(os.environ["CHAOS_RECORD_DIR"]) / "attempts" / token
    attempts.parent.mkdir(exist_ok=True)
    _append(attempts, "x")
    attempt = len(attempts.read_text())
    if attempt <= RETRIED_FAILURES:
        raise RuntimeError(f"flaky: attempt {attempt} fails")
    return token


@task(name="chaos.crash")
def crash(token: str) -> None:
    """Kills its own process, as a segfault or the OOM killer would."""
    record_run(token)
    os._exit(17)


def _sum_rate() -> float:
    """Integers `sum(range(n))` adds a second here, in one C call that keeps the GIL."""
    started = time.perf_counter()
    sum(range(200_000))
    return 200_000 / max(time.perf_counter() - started, 1e-6)


SUM_RATE = _sum_rate()


@task(name="chaos.gil")
def gil(token: str, seconds: float = 0.0) -> str:
    """Healthy work that holds the GIL for `seconds` (no thread of its consumer runs
    meanwhile, its heartbeat included), then records its run."""
    sum(range(int(SUM_RATE * seconds)))
    record_run(token)
    return token
