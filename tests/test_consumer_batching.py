"""The COUNT of each read: the rule alone, a worker following it on a real Redis, and
slow tasks spread over two real consumer processes with default settings."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from consumer.batching import (
    IDLE_KEEP_S,
    MAX_COUNT,
    TARGET_BATCH_S,
    ReadSize,
    next_count,
)
from harness.processes import wait_for
from harness.stack import Stack
from tests.factories import add_entry, call, drained, make_worker, pending


def test_next_count_starts_at_one_and_doubles_while_tasks_are_fast() -> None:
    got, counts = 0, []
    for _ in range(12):
        got = next_count(got, elapsed_s=got * 0.000_01)  # 10 µs an entry
        counts.append(got)
    assert counts[:4] == [1, 2, 4, 8]
    assert counts[-1] == MAX_COUNT


def test_next_count_shrinks_at_once_for_slow_tasks() -> None:
    assert next_count(MAX_COUNT, elapsed_s=MAX_COUNT * 0.001) == 50  # 1 ms an entry
    assert next_count(MAX_COUNT, elapsed_s=MAX_COUNT * 0.1) == 1  # 100 ms an entry
    assert next_count(1, elapsed_s=TARGET_BATCH_S * 3) == 1


def test_next_count_after_a_read_that_found_nothing_is_one() -> None:
    assert next_count(0, elapsed_s=0.0) == 1
    assert next_count(0, elapsed_s=60.0) == 1


@given(got=st.integers(0, 100_000), elapsed_s=st.floats(0, 1e9))
def test_next_count_never_reads_zero_nor_more_than_the_cap(
    got: int, elapsed_s: float
) -> None:
    assert 1 <= next_count(got, elapsed_s) <= MAX_COUNT


def test_read_size_an_explicit_batch_size_wins() -> None:
    size = ReadSize(batch_size=7)
    assert size.count() == 7
    size.returned(7)  # a batch returned at once: fast tasks, but the setting is fixed
    assert size.count() == 7
    size.returned(0)
    assert size.count() == 7


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_read_size_keeps_the_earned_count_while_briefly_idle_then_reads_one() -> None:
    clock = FakeClock()
    size = ReadSize(batch_size=None, clock=clock)
    assert size.count() == 1  # knows nothing yet
    size.returned(1)
    clock.now += 0.001  # 1 ms an entry: twice as many next
    assert size.count() == 2
    size.returned(2)
    clock.now += 0.002
    assert size.count() == 4
    size.returned(0)  # found nothing: the burst is over
    clock.now += IDLE_KEEP_S / 2
    assert size.count() == 4  # the next burst is read as the last one ended
    size.returned(0)  # still nothing: kept, not grown
    assert size.count() == 4
    clock.now += IDLE_KEEP_S / 2  # IDLE_KEEP_S since that batch ended
    assert size.count() == 1
    size.returned(3)
    clock.now += 3 * TARGET_BATCH_S  # slow now: one at a time, kept as such
    assert size.count() == 1
    size.returned(0)
    assert size.count() == 1


def echo(**payload: Any) -> dict[str, Any]:
    return payload


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_worker_default_count_grows_with_fast_entries(r: redis.Redis) -> None:
    worker = make_worker(r, {"echo": echo}, batch_size=None)
    for n in range(40):
        add_entry(r, "echo", {"n": n})
    # Each poll reads twice what the last one finished (well within TARGET_BATCH_S).
    assert [worker.poll_once() for _ in range(6)] == [1, 2, 4, 8, 16, 9]
    assert worker.poll_once() == 0  # nothing left: the earned count is kept a while
    assert worker.reader.read_size.count() == 18
    for n in range(20):
        add_entry(r, "echo", {"n": n})
    assert worker.poll_once() == 18  # the next burst in one read, not 1, 2, 4, ...
    assert pending(r) == []


def test_worker_default_count_stays_at_one_for_slow_entries(r: redis.Redis) -> None:
    slow_s = TARGET_BATCH_S * 1.2  # a task longer than a batch's target
    worker = make_worker(r, {"nap": nap}, batch_size=None)
    for _ in range(3):
        add_entry(r, "nap", {"seconds": slow_s})
    # One at a time: the others stay on the stream, free for any idle consumer.
    assert [worker.poll_once() for _ in range(3)] == [1, 1, 1]
    assert pending(r) == []


@pytest.mark.timeout(90)
def test_e2e_slow_tasks_are_spread_over_both_consumers_by_default(
    tmp_path: Path,
) -> None:
    """Default settings (no BATCH_SIZE): 10 tasks of 0.2 s dispatched in one request.
    A fixed COUNT of 10 would hand all of them to whichever consumer reads first."""
    env = {"LOG_LEVEL": "DEBUG"}  # each consumer logs the IDs it acknowledged
    stack = Stack(tmp_path, consumers=2, consumer_env=env).start()
    try:
        wait_for(stack.consumers_idle, timeout_s=30, every_s=0.05)
        payloads = [{"seconds": 0.2}] * 10
        status, body = call(
            f"{stack.base_url}/dispatch", {"task": "sleep", "payloads": payloads}
        )
        assert status == 202
        with redis.Redis.from_url(stack.url, decode_responses=True) as client:
            wait_for(lambda: drained(client, 10), timeout_s=60, every_s=0.05)
        ran = {name: _acked(stack.log_text(name)) for name in ("c1", "c2")}
    finally:
        stack.stop()
    assert ran["c1"] | ran["c2"] == set(body["entry_ids"])
    # Each ran about half (one at a time, each taking the next when done).
    assert min(len(ids) for ids in ran.values()) >= 3, ran


def _acked(log: str) -> set[str]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return {
        i for x in lines if x["message"] == "messages acked" for i in x["entry_ids"]
    }
