"""The heartbeat keeps held claims alive, notices lost ones, and lets hung tasks go."""

import threading
import time

import redis

from tests.conftest import eventually
from tests.factories import GROUP, STREAM, add_entry, make_worker, pending, result_of


def idle_ms(client: redis.Redis) -> dict[str, int]:
    return {row["message_id"]: row["time_since_delivered"] for row in pending(client)}


def test_heartbeat_renews_held_claims_so_no_one_takes_them(r: redis.Redis) -> None:
    worker = make_worker(r, {}, claim_idle_ms=300)
    entry_id = add_entry(r, "echo")
    messages = worker.reader.read_new()
    worker.ownership.hold(m.entry_id for m in messages)
    # Pending list: the entry, held by c1, going idle.
    eventually(lambda: idle_ms(r)[entry_id] >= 300)
    worker.ownership.renew()
    # Pending list: the same entry, idle time reset, delivery count untouched.
    assert idle_ms(r)[entry_id] < 300
    assert pending(r)[0]["times_delivered"] == 1
    thief = make_worker(r, {}, claim_idle_ms=300, consumer_name="thief")
    assert thief.claim_stale() == []


def test_heartbeat_marks_claims_taken_over_and_the_worker_skips_them(
    r: redis.Redis,
) -> None:
    ran: list[int] = []
    worker = make_worker(r, {"job": lambda n: ran.append(n)})
    ids = [add_entry(r, "job", {"n": n}) for n in range(2)]
    messages = worker.reader.read_new()
    worker.ownership.hold(ids)
    # While c1 was frozen, another consumer claimed the second entry.
    r.xclaim(STREAM, GROUP, "other", 0, [ids[1]])
    worker.ownership.renew()
    assert not worker.ownership.still_ours(ids[1])
    worker.process(messages)
    # Pending list: only ids[1], still the other consumer's, which will run it.
    assert ran == [0]
    assert [(row["message_id"], row["consumer"]) for row in pending(r)] == [
        (ids[1], "other")
    ]


def test_heartbeat_stops_renewing_a_task_running_past_its_timeout(
    r: redis.Redis,
) -> None:
    worker = make_worker(r, {}, task_timeout_s=0.01)
    ids = [add_entry(r, "job") for _ in range(2)]
    worker.reader.read_new()
    worker.ownership.hold(ids)
    worker.ownership.start(ids[0])
    eventually(lambda: worker.ownership.renewable() == [ids[1]])


def test_worker_run_keeps_a_task_longer_than_claim_idle_ms(r: redis.Redis) -> None:
    runs: list[str] = []

    def long_task() -> str:
        runs.append("start")
        started = time.monotonic()
        while time.monotonic() - started < 0.9:  # the task's work: 3x claim_idle_ms
            time.sleep(0.05)
        return "done"

    # Heartbeats every 100 ms: a stall of up to ~200 ms still leaves the claim alive.
    worker = make_worker(r, {"long": long_task}, claim_idle_ms=300)
    thief = make_worker(
        r, {"long": long_task}, claim_idle_ms=300, consumer_name="thief"
    )
    entry_id = add_entry(r, "long")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        eventually(lambda: runs)
        while not result_of(r, entry_id):
            # Pending list: the entry, c1's, its idle time reset by every beat.
            assert thief.claim_stale() == []  # the claim never lapses while it runs
            time.sleep(0.005)
    finally:
        worker.stopping.set()
        thread.join(timeout=2)
    assert runs == ["start"]
    assert pending(r) == []


def test_worker_woken_from_a_freeze_skips_entries_taken_over_meanwhile(
    r: redis.Redis,
) -> None:
    ran: list[int] = []

    def job(n: int) -> int:
        ran.append(n)
        if n == 0:
            # While this task runs, the worker is "frozen" (no heartbeat thread runs in
            # this test) and another consumer takes over the next entry of the batch.
            eventually(lambda: worker.ownership.renewal_overdue())
            r.xclaim(STREAM, GROUP, "other", 0, [ids[1]])
        return n

    worker = make_worker(r, {"job": job}, claim_idle_ms=60)
    ids = [add_entry(r, "job", {"n": n}) for n in range(3)]
    worker.poll_once()
    # Pending list: only ids[1], now the other consumer's; c1 ran ids[0] and ids[2].
    assert ran == [0, 2]
    assert [(row["message_id"], row["consumer"]) for row in pending(r)] == [
        (ids[1], "other")
    ]


def test_worker_counts_a_late_ack_of_an_entry_taken_over_mid_task(
    r: redis.Redis,
) -> None:
    def job() -> str:
        # Frozen mid-task (no heartbeat thread here) while another consumer takes over.
        eventually(lambda: worker.ownership.renewal_overdue())
        r.xclaim(STREAM, GROUP, "other", 0, [entry_id])
        return "done anyway"

    worker = make_worker(r, {"job": job}, claim_idle_ms=60)
    entry_id = add_entry(r, "job")
    worker.poll_once()
    # Pending list: empty. The late ack removed the entry the other consumer now held.
    assert pending(r) == []
    assert worker.metrics.late_acks._value.get() == 1


def test_a_task_hung_past_task_timeout_is_handed_to_another_consumer(
    r: redis.Redis,
) -> None:
    unblock = threading.Event()
    ran: list[str] = []

    def hangs(who: str) -> str:
        ran.append(who)
        if len(ran) == 1:
            unblock.wait(20)  # hung, until the test lets it go
        return who

    worker = make_worker(r, {"hangs": hangs}, claim_idle_ms=300, task_timeout_s=0.3)
    heir = make_worker(r, {"hangs": hangs}, claim_idle_ms=300, consumer_name="heir")
    entry_id = add_entry(r, "hangs", {"who": "any"})
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        eventually(lambda: ran)
        # Pending list: the entry, c1's. Its heartbeat stops renewing it after 0.3 s,
        # so it lapses after claim_idle_ms and the heir takes it over and runs it.
        eventually(lambda: heir.poll_once() == 1, timeout_s=10)
        assert result_of(r, entry_id) == '"any"' and len(ran) == 2
    finally:
        unblock.set()
        worker.stopping.set()
        thread.join(timeout=5)
    # The hung run finished late: its ack found the entry gone, counted as late.
    assert worker.metrics.late_acks._value.get() == 1
