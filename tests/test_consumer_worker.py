"""The worker against a real Redis, told as stories of what the pending list holds."""

import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.conftest import eventually
from tests.factories import (
    DEAD,
    DELAYED,
    GROUP,
    QUEUE,
    STREAM,
    add_entry,
    dead_letters,
    deliver_to,
    entry_ids,
    make_worker,
    pending,
    result_of,
)


class BoomError(Exception):
    pass


def echo(**payload: Any) -> dict[str, Any]:
    return payload


def always_fail(**payload: Any) -> None:
    raise BoomError("always")


def add(a: int, b: int) -> int:
    return a + b


TASKS: dict[str, Callable[..., Any]] = {
    "echo": echo,
    "always_fail": always_fail,
    "add": add,
}


def test_worker_reads_runs_and_acks_a_batch(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    ids = [add_entry(r, "add", {"a": i, "b": 1}) for i in range(3)]
    assert worker.poll_once() == 3
    # Pending list: empty; every entry acknowledged with its result stored.
    assert pending(r) == []
    assert [json.loads(result_of(r, i) or "") for i in ids] == [1, 2, 3]
    assert 0 < r.ttl(QUEUE.results_key(ids[0])) <= worker.settings.result_ttl_s


def test_worker_group_created_at_zero_reads_entries_written_before_it(
    r: redis.Redis,
) -> None:
    entry_id = add_entry(r, "echo", {"early": True})
    worker = make_worker(r, TASKS)  # creates the group now, after the entry was written
    assert worker.poll_once() == 1
    assert json.loads(result_of(r, entry_id) or "") == {"early": True}


def test_worker_ensure_group_twice_is_fine(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    worker.ensure_group()
    assert [g["name"] for g in r.xinfo_groups(STREAM)] == [GROUP]


def test_worker_failure_is_retried_after_its_backoff_holding_nothing(
    r: redis.Redis,
) -> None:
    attempts: list[int] = []

    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise BoomError("first attempt fails")
        return n

    worker = make_worker(r, {"flaky": flaky}, retry_backoff_s=0.05)
    task_id = add_entry(r, "flaky", {"n": 7})
    worker.poll_once()
    # Pending list: empty; the retry waits in the delayed set, holding nothing.
    assert pending(r) == []
    assert r.zrange(DELAYED, 0, -1) == [task_id]
    # Once due, the clock moves it onto the stream (a new entry, the same task ID).
    eventually(lambda: worker.clock.tick() or r.zcard(DELAYED) == 0)
    worker.poll_once()
    assert pending(r) == [] and attempts == [7, 7]
    assert result_of(r, task_id) == "7"  # stored under the task's ID


def test_worker_reclaims_the_entries_of_a_crashed_consumer(r: redis.Redis) -> None:
    ids = [add_entry(r, "echo", {"n": i}) for i in range(3)]
    make_worker(r, TASKS)
    assert deliver_to(r, "crashed") == ids
    # Pending list: three entries owned by "crashed", which will never ack them.
    assert {row["consumer"] for row in pending(r)} == {"crashed"}
    survivor = make_worker(r, TASKS, consumer_name="survivor")
    eventually(lambda: survivor.poll_once() and not pending(r))
    # Pending list: empty; the survivor ran all three, one at a time.
    assert all(result_of(r, i) for i in ids)
    assert survivor.metrics.reclaimed._value.get() == 3


def test_worker_dead_letters_a_failing_entry_at_max_deliveries(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, max_deliveries=3, retry_backoff_s=0.01)
    task_id = add_entry(r, "always_fail", {"x": 1})

    def attempt() -> bool:
        worker.clock.tick()
        worker.poll_once()
        return r.xlen(DEAD) == 1

    eventually(attempt)  # three attempts: the first, then two retries
    # Pending list and delayed set: empty; the dead letter holds it once, with why.
    assert pending(r) == [] and r.zcard(DELAYED) == 0
    [dead] = dead_letters(r)
    assert dead["id"] == task_id
    assert dead["deliveries"] == "3"
    assert dead["error"] == "BoomError: always"
    assert dead["consumer"] == "c1"


def test_worker_dead_letters_an_entry_that_crashed_every_consumer(
    r: redis.Redis,
) -> None:
    calls: list[int] = []
    worker = make_worker(r, {"echo": lambda **p: calls.append(1)}, max_deliveries=2)
    entry_id = add_entry(r, "echo")
    # Two consumers took it and died in the task (no ack, no failure recorded).
    deliver_to(r, "crashed-1")
    r.xclaim(STREAM, GROUP, "crashed-2", 0, [entry_id])
    # Pending list: the entry, owned by crashed-2, delivered twice.
    assert pending(r)[0]["times_delivered"] == 2
    eventually(lambda: r.xlen(DEAD) == 1 or worker.poll_once() < 0)
    # Pending list: empty; it went to the dead-letter stream without running again.
    assert pending(r) == []
    assert calls == []
    [dead] = dead_letters(r)
    assert dead["deliveries"] == "2"
    assert "crashed" in dead["error"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"payload": "{not json"}, "payload is not valid JSON"),
        ({"payload": "[1, 2]"}, "payload is not a JSON object"),
        ({"payload": json.dumps({"a": 1})}, "payload does not fit task 'add'"),
    ],
)
def test_worker_dead_letters_an_entry_that_can_never_succeed(
    r: redis.Redis, fields: dict[str, str], reason: str
) -> None:
    worker = make_worker(r, TASKS)
    entry_id = add_entry(r, "add", {"a": 1, "b": 2}, raw=fields)
    worker.poll_once()
    # Pending list: empty at once, after a single delivery.
    assert pending(r) == []
    [dead] = dead_letters(r)
    assert (dead["source_id"], dead["deliveries"]) == (entry_id, "1")
    assert dead["error"].startswith(reason)


def test_worker_dead_letters_a_result_that_is_not_json(r: redis.Redis) -> None:
    worker = make_worker(r, {"echo": lambda: {1, 2}})
    add_entry(r, "echo")
    worker.poll_once()
    assert pending(r) == []
    assert dead_letters(r)[0]["error"].startswith("result is not JSON")


def test_worker_dead_letter_is_written_once_even_if_repeated(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    add_entry(r, "echo")
    [message] = worker.reader.read_new()
    worker.outcomes.dead_letter(message, "first")
    worker.outcomes.dead_letter(message, "again, as a late or retried attempt would")
    assert r.xlen(DEAD) == 1
    assert pending(r) == []


def test_worker_trimming_keeps_pending_and_undelivered_entries(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, batch_size=2, trim_interval_ms=60_000)
    ids = [add_entry(r, "echo", {"n": i}) for i in range(6)]
    deliver_to(r, "slow", count=2)
    worker.poll_once()
    # Pending list: ids[0:2] held by "slow"; ids[2:4] acked; ids[4:6] never delivered.
    worker._next_trim_s = 0
    worker.trim_when_due()
    assert entry_ids(r) == ids  # the oldest pending entry is ids[0]
    r.xack(STREAM, GROUP, *ids[:2])
    # Pending list: empty. Delivered up to ids[3]; ids[4:6] still wait for a consumer.
    worker._next_trim_s = 0
    worker.trim_when_due()
    assert entry_ids(r) == ids[3:]


def test_trimming_respects_every_group_on_the_stream(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    ids = [add_entry(r, "echo") for _ in range(3)]
    r.xgroup_create(STREAM, "audit", "0")  # another reader that has read nothing yet
    worker.poll_once()
    assert entry_ids(r) == ids


def test_worker_stop_finishes_the_entry_in_hand_and_releases_the_rest(
    r: redis.Redis,
) -> None:
    ran: list[int] = []
    first = make_worker(r, {}, claim_idle_ms=60_000, consumer_name="first")

    def stop_after_me(n: int) -> int:
        ran.append(n)
        first.stopping.set()  # SIGTERM arrives while this entry runs
        return n

    first.tasks = {"job": stop_after_me}
    ids = [add_entry(r, "job", {"n": i}) for i in range(3)]
    first.poll_once()
    # Pending list: ids[1:], still first's, idle for claim_idle_ms, deliveries undone.
    assert ran == [0]
    assert result_of(r, ids[0]) == "0"
    rows = pending(r)
    assert [row["message_id"] for row in rows] == ids[1:]
    assert all(row["times_delivered"] == 0 for row in rows)
    assert all(row["time_since_delivered"] >= 60_000 for row in rows)
    # Another consumer takes them at once, despite a claim_idle_ms of a minute.
    second = make_worker(
        r, {"job": echo_n}, claim_idle_ms=60_000, consumer_name="second"
    )
    assert [second.poll_once(), second.poll_once()] == [1, 1]
    assert pending(r) == []


def echo_n(n: int) -> int:
    return n


def test_worker_run_stops_promptly_when_stopping_is_set(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS, block_ms=50)
    thread = threading.Thread(target=worker.run)
    thread.start()
    add_entry(r, "echo", {"n": 1})
    eventually(
        lambda: r.xinfo_groups(STREAM)[0]["entries-read"] == 1 and not pending(r)
    )
    worker.stopping.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_worker_recreates_a_group_that_vanished_and_says_so(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        first = add_entry(r, "echo", {"n": 1})
        eventually(lambda: result_of(r, first))
        r.delete(STREAM)  # as after a Redis restart without persistence
        # The next read answers NOGROUP: the worker creates the group again.
        eventually(lambda: worker.metrics.group_recreated._value.get() == 1)
        entry_id = add_entry(r, "echo", {"back": 1})
        eventually(lambda: result_of(r, entry_id))
    finally:
        worker.stopping.set()
        thread.join(timeout=2)
    assert not thread.is_alive()


def test_worker_counts_pending_entries_deleted_from_the_stream(r: redis.Redis) -> None:
    worker = make_worker(r, TASKS)
    ids = [add_entry(r, "echo") for _ in range(2)]
    deliver_to(r, "crashed")
    r.xdel(STREAM, ids[0])  # someone deleted a pending entry: Redis 7 reports it
    eventually(lambda: worker.poll_once())
    assert worker.metrics.deleted_pending._value.get() == 1
    assert pending(r) == []


class CrashError(BaseException):
    """Stands in for a crash: not an Exception, so it goes through the worker uncaught,
    leaving the batch unacknowledged as a killed process would."""


def test_worker_a_crashing_entry_does_not_use_up_its_batch_mates(
    r: redis.Redis,
) -> None:
    def job(crash: bool) -> str:
        if crash:
            raise CrashError
        return "ok"

    worker = make_worker(r, {"job": job}, max_deliveries=3)
    ids = [add_entry(r, "job", {"crash": n == 1}) for n in range(4)]
    with pytest.raises(CrashError):
        worker.poll_once()
    # Pending list: all four, delivered once; ids[0] ran, ids[1] crashed, 2-3 never ran.

    def poll_through_crashes() -> bool:
        with contextlib.suppress(CrashError):
            worker.poll_once()
        return not pending(r)

    eventually(poll_through_crashes)
    # Pending list: empty. Only the crashing entry was dead-lettered, after 3 attempts;
    # the others all ran, although they shared its first batch.
    assert [(d["source_id"], d["deliveries"]) for d in dead_letters(r)] == [
        (ids[1], "3")
    ]
    assert all(result_of(r, i) == '"ok"' for i in ids if i != ids[1])


def test_worker_scan_for_stale_entries_ends_past_its_newest_read(
    r: redis.Redis,
) -> None:
    """While consumers drain a backlog, the pending list grows at its end faster than
    XAUTOCLAIM scans (10 x COUNT entries a call); a scan must not chase it."""
    worker = make_worker(
        r, TASKS, claim_idle_ms=60_000, claim_interval_ms=200, batch_size=10
    )
    first = add_entry(r, "echo")
    assert [m.entry_id for m in worker.reader.read_new(0)] == [first]
    later = [add_entry(r, "echo") for _ in range(152)]
    assert deliver_to(r, "busy", count=152) == later
    # Pending list: ours, then 152 held by "busy"; the last two go to "crashed",
    # idle for long (XCLAIM IDLE), so they are stale already.
    stale = later[-2:]
    r.xclaim(
        STREAM, GROUP, "crashed", 0, [stale[0], stale[1]], idle=120_000, justid=True
    )
    r.config_resetstat()
    # The first call scans ours and 99 of busy's: all newer than our read, so none
    # can be stale yet; the scan ends there instead of going on at the next poll.
    assert worker.reader.claim_stale() == []
    assert worker.reader.claim_stale() == []
    assert r.info("commandstats")["cmdstat_xautoclaim"]["calls"] == 1
    assert {row["consumer"] for row in pending(r) if row["message_id"] in stale} == {
        "crashed"
    }
    # A new read moves the scan's end past them: the next scan, claim_interval_ms
    # later, reaches them.
    newest = add_entry(r, "echo")
    assert [m.entry_id for m in worker.reader.read_new(0)] == [newest]
    claimed: list[str] = []

    def scan() -> bool:
        claimed.extend(m.entry_id for m in worker.reader.claim_stale())
        return claimed == stale

    eventually(scan)
