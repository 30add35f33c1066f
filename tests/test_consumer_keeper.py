"""The keeper process: a task that holds the GIL keeps its claim (no thread of its
worker can run meanwhile), a stopped worker gets no help, and a task holding the GIL
past its timeout gets its worker killed, the entry reclaimed, nothing lost."""

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.keeper import Beacon, Keeper, stopped
from harness.stack import Stack
from tests.conftest import eventually
from tests.factories import DEAD, call, dead_letters, drained, pending

pytestmark = pytest.mark.timeout(120)


def test_beacon_publishes_what_the_worker_holds() -> None:
    beacon = Beacon()
    beacon.held(["1-0", "2-0", "3-0"])
    beacon.task("2-0", 123.5)
    published = beacon.read()
    assert (published.held, published.running) == (("1-0", "2-0", "3-0"), "2-0")
    assert published.task_started_s == 123.5
    beacon.held([])
    assert beacon.read().held == ()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for a worker, to stop and kill."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_keeper_renews_only_while_the_heartbeat_is_overdue_and_the_worker_runs(
    sleeper: subprocess.Popen[bytes],
) -> None:
    beacon, renewed = Beacon(), []

    def renew(entry_ids: list[str]) -> list[str]:
        renewed.append(entry_ids)
        return entry_ids

    beacon.held(["1-0", "2-0"])
    keeper = Keeper(beacon, sleeper.pid, interval_s=0.05, timeout_s=60)
    assert keeper.step(renew) and renewed == []  # the heartbeat just beat
    eventually(lambda: time.monotonic() - beacon.read().last_beat_s > 0.1)
    assert keeper.step(renew) and renewed == [["1-0", "2-0"]]
    sleeper.send_signal(signal.SIGSTOP)  # frozen: its claims must lapse
    eventually(lambda: stopped(sleeper.pid))
    assert keeper.step(renew) and len(renewed) == 1
    sleeper.send_signal(signal.SIGCONT)


def test_keeper_kills_a_worker_whose_task_held_on_past_its_timeout(
    sleeper: subprocess.Popen[bytes],
) -> None:
    beacon = Beacon()
    beacon.held(["1-0"])
    beacon.task("1-0", time.monotonic() - 100)
    keeper = Keeper(beacon, sleeper.pid, interval_s=0.05, timeout_s=10)
    assert keeper.step(lambda ids: ids) is False
    assert sleeper.wait(5) == -signal.SIGKILL


def runs_of(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def start(tmp_path: Path, redis_url: str, **env: str) -> Stack:
    settings = {"CLAIM_IDLE_MS": "600", "CLAIM_INTERVAL_MS": "50", "BLOCK_MS": "100",
                "BATCH_SIZE": "1", "TASK_MODULES": "tests.e2e_tasks"} | env  # fmt: skip
    return Stack(tmp_path, consumers=2, consumer_env=settings, redis_url=redis_url,
                 supervise=True).start()  # fmt: skip


def test_a_task_holding_the_gil_past_claim_idle_keeps_its_claim(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    stack = start(tmp_path, redis_url)
    try:
        # Each task holds the GIL ~2.4 s: 4x CLAIM_IDLE_MS without a heartbeat.
        payloads = [
            {"token": f"t{n}", "seconds": 2.4, "runs": str(runs)} for n in range(3)
        ]
        assert (
            call(f"{stack.base_url}/dispatch", {"task": "gil", "payloads": payloads})[0]
            == 202
        )
        eventually(lambda: drained(r, 3), timeout_s=60)
    finally:
        stack.stop()
    assert runs_of(runs) == Counter({"t0": 1, "t1": 1, "t2": 1})  # none ran twice
    assert stack.restarts == 0
    assert all("late acks" not in stack.log_text(name) for name in stack.consumers)


def test_a_task_holding_the_gil_past_its_timeout_is_killed_and_contained(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    stack = start(tmp_path, redis_url, TASK_TIMEOUT_S="0.5", MAX_DELIVERIES="2")
    try:
        payload = {"token": "stuck", "seconds": 600, "runs": str(runs)}
        _, body = call(
            f"{stack.base_url}/dispatch", {"task": "gil", "payloads": [payload]}
        )
        # Killed twice (timeout + 5 s grace each), then dead-lettered unrun.
        eventually(lambda: r.exists(DEAD), timeout_s=60)
    finally:
        stack.stop()
    [letter] = dead_letters(r)
    assert letter["source_id"] == body["entry_ids"][0]
    assert runs_of(runs)["stuck"] == 2  # MAX_DELIVERIES attempts, each killed
    assert pending(r) == []
    logs = "".join(stack.log_text(name) for name in stack.consumers)
    assert logs.count("task held the worker past its timeout (a call that cannot") == 2
