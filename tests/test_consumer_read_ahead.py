"""Read-ahead and ack-ahead (consumer/in_flight.py), on a real Redis: with tiny tasks
the next read is sent before the batch runs, and a batch's ack is read during the next;
nothing read ahead is lost when the consumer stops, when its reply is lost, or when the
batch runs long; an ack sent ahead under maxmemory still acknowledges; slow tasks and
an explicit BATCH_SIZE are read and acked one batch at a time, as before."""

import time
from collections.abc import Callable
from typing import Any

import redis

from consumer.in_flight import READ_AHEAD_FROM, TAKE_EVERY, InFlight
from consumer.worker import Worker
from harness.processes import wait_for
from tests.factories import add_entry, drained, make_worker, pending, result_of


def echo(**payload: Any) -> dict[str, Any]:
    return payload


def warm_up(worker: Worker, client: redis.Redis) -> int:
    """Poll tiny tasks until a read is large enough to be read ahead; how many ran.
    The count doubles from 1 (consumer/batching.py), so that takes 8 polls."""
    ran = 0
    while worker.reader.read_size.count() < READ_AHEAD_FROM:
        taken = worker.poll_once()
        assert taken, "the stream ran dry before the count grew"
        ran += taken
    assert not worker.reader.ahead.outstanding
    return ran


def next_read_128(worker: Worker) -> None:
    """After warm_up: the next read takes 128 entries, twice the ramp's last 64, however
    slowly a loaded machine ran the ramp (as if those 64 had just returned)."""
    worker.reader.read_size.returned(64)
    assert worker.reader.read_size.count() == 128


def ramp_worker(
    client: redis.Redis, extra: dict[str, Callable[..., Any]]
) -> tuple[Worker, list[str]]:
    """A worker of tiny tasks (echo, and `extra`), its claims far from stale, and the
    127 entries of its ramp (1 + 2 + ... + 64) on the stream."""
    tasks: dict[str, Callable[..., Any]] = {"echo": echo, **extra}
    worker = make_worker(client, tasks, batch_size=None, claim_idle_ms=60_000)
    return worker, fill(client, 127)


def read_ahead_answered(worker: Worker) -> None:
    """(In a task) wait until the read ahead was answered: its reply arrived, or it
    was taken in hand already."""
    ahead = worker.reader.ahead
    wait_for(lambda: not ahead.outstanding or ahead.arrived(), timeout_s=10)


def fill(client: redis.Redis, count: int, task: str = "echo") -> list[str]:
    return [add_entry(client, task, {"n": n}) for n in range(count)]


def warmed(client: redis.Redis) -> tuple[list[str], Worker, int]:
    """1,000 tiny tasks, and a worker (default batching) warmed up on them: the IDs,
    the worker, how many it ran."""
    ids = fill(client, 1000)
    # Claims far from stale (the factory's 20 ms): a loaded machine's slow batch must
    # not make the worker reclaim, and run twice, its own entries read ahead.
    worker = make_worker(client, {"echo": echo}, batch_size=None, claim_idle_ms=60_000)
    return ids, worker, warm_up(worker, client)


def test_tiny_tasks_the_next_read_is_sent_before_the_batch_runs(
    r: redis.Redis,
) -> None:
    ids, worker, ran = warmed(r)
    count = worker.reader.read_size.count()
    assert worker.poll_once() == count
    ran += count
    # The batch is acked; the next one was read meanwhile, pending under this consumer
    # (held from when its reply is taken: the next test). Both were sent, not waited
    # for: wait until Redis has done them.
    batch = ids[ran - count : ran]
    wait_for(lambda: all(result_of(r, entry_id) for entry_id in batch), timeout_s=10)
    read_ahead_answered(worker)
    ahead = [row["message_id"] for row in pending(r)]
    assert worker.reader.in_hand
    assert set(worker.ownership.renewable()) <= set(ahead)
    assert ahead == ids[ran : ran + count]
    assert {row["consumer"] for row in pending(r)} == {"c1"}
    # The next poll runs exactly those, without reading again first.
    assert worker.poll_once() == count
    wait_for(lambda: all(result_of(r, entry_id) for entry_id in ahead), timeout_s=10)
    while worker.poll_once():
        pass
    assert drained(r, len(ids))
    assert all(result_of(r, entry_id) for entry_id in ids)
    assert not worker.reader.ahead.outstanding  # the read ahead that found nothing


def test_the_read_ahead_is_held_from_halfway_through_the_batch_once_answered(
    r: redis.Redis,
) -> None:
    """From halfway through a batch the worker looks for the read ahead's reply
    (consumer.in_flight.TAKE_EVERY) and, once it has arrived, holds its entries (the
    heartbeat renews their claims), without waiting for the batch to end."""
    seen: dict[str, Any] = {}
    worker: Worker

    def answered() -> None:  # the batch's last task before halfway
        seen["in flight before"] = worker.reader.ahead.outstanding
        read_ahead_answered(worker)

    def note() -> None:  # the task at halfway
        seen["in flight after"] = worker.reader.ahead.outstanding
        seen["held"] = set(worker.ownership.renewable())

    worker, first = ramp_worker(r, {"answered": answered, "note": note})
    batch = [*fill(r, 63), add_entry(r, "answered"), add_entry(r, "note")]
    batch += fill(r, 63)  # 128: halfway is its 65th, the note
    ahead_ids = fill(r, 128)
    assert warm_up(worker, r) == len(first)
    next_read_128(worker)
    assert worker.poll_once() == len(batch)
    assert seen["in flight before"] is True
    assert seen["in flight after"] is False
    assert set(ahead_ids) <= seen["held"]
    assert sorted(worker.ownership.renewable()) == sorted(ahead_ids)
    assert worker.poll_once() == len(ahead_ids)
    assert drained(r, len(first) + len(batch) + len(ahead_ids))


def test_a_read_ahead_not_yet_answered_is_not_waited_for_mid_batch(
    own: redis.Redis,
) -> None:
    """Redis holds every write (CLIENT PAUSE WRITE: XREADGROUP is one) while a batch
    runs: its read ahead goes unanswered, and the batch still runs to its end without
    waiting for it (it used to wait halfway through); the entries come once Redis
    answers."""
    ids = fill(own, 1000)
    # Nothing else writes meanwhile: no scan for stale entries, no trim, and the
    # claims are fresh enough not to be renewed after the test's waits.
    quiet = {"claim_interval_ms": 600_000, "trim_interval_ms": 600_000}
    worker = make_worker(
        own, {"echo": echo}, batch_size=None, claim_idle_ms=60_000, **quiet
    )
    ran = warm_up(worker, own)
    taken = worker.poll_once()  # read now; the next batch read ahead
    ran += taken
    wait_for(lambda: all(result_of(own, i) for i in ids[:ran]), timeout_s=10)
    read_ahead_answered(worker)  # taken already, or its reply waiting to be
    # Those waits were not the batch's work: the count stays large (read ahead).
    worker.reader.read_size.returned(taken)
    own.client_pause(10_000, all=False)  # CLIENT PAUSE 10000 WRITE
    try:
        started = time.monotonic()
        taken = worker.poll_once()  # the batch read ahead; the next read is held
        assert time.monotonic() - started < 5  # not the pause's 10 s
        assert worker.reader.ahead.outstanding
        assert not any(result_of(own, i) for i in ids[ran + taken :])
    finally:
        own.client_unpause()
    while worker.poll_once():
        pass
    assert drained(own, len(ids))
    assert all(result_of(own, entry_id) for entry_id in ids)


def test_replies_in_flight_are_looked_for_without_waiting(r: redis.Redis) -> None:
    """InFlight.arrived() reads the replies that are complete and never waits for the
    rest; collect() then returns every reply, in order."""
    in_flight = InFlight(r)
    in_flight.send(("PING",), ("BLPOP", "signal", 30))  # the BLPOP waits for a push
    started = time.monotonic()
    assert not in_flight.arrived()
    assert not in_flight.arrived()
    assert time.monotonic() - started < 5  # not BLPOP's 30 s
    r.rpush("signal", "go")
    wait_for(in_flight.arrived, timeout_s=10)
    assert in_flight.collect() == ["PONG", ["signal", "go"]]
    assert not in_flight.outstanding
    assert r.ping()  # the connection went back to the pool in step
    in_flight.send(("PING",))
    wait_for(in_flight.arrived, timeout_s=10)
    assert in_flight.collect() == ["PONG"]


def test_slow_tasks_and_an_explicit_batch_size_are_not_read_ahead(
    r: redis.Redis,
) -> None:
    fill(r, 1000)
    fixed = make_worker(r, {"echo": echo}, batch_size=500)
    assert fixed.poll_once() == 500
    assert not fixed.reader.ahead.outstanding
    assert pending(r) == []
    adaptive = make_worker(r, {"echo": echo}, batch_size=None)
    adaptive.reader.read_size.returned(1)  # last batch: one entry that took...
    adaptive.reader.read_size._returned_s -= 0.05  # ...a whole batch's target time
    assert adaptive.reader.read_size.count() == 1
    assert adaptive.poll_once() == 1
    assert not adaptive.reader.ahead.outstanding
    assert pending(r) == []


def test_on_stop_the_entries_read_ahead_go_back_unrun_and_uncounted(
    r: redis.Redis,
) -> None:
    ids = fill(r, 600)
    worker = make_worker(r, {"echo": echo}, batch_size=None, claim_idle_ms=60_000)
    with worker.running():  # as run() and the partitions' rotation do
        warm_up(worker, r)
        worker.poll_once()
        ahead = [row["message_id"] for row in pending(r)]
        assert len(ahead) >= READ_AHEAD_FROM
        worker.stopping.set()  # SIGTERM
    # Released: claimable by any consumer at once, their delivery not counted.
    assert not worker.reader.ahead.outstanding
    rows = pending(r)
    assert [row["message_id"] for row in rows] == ahead
    assert all(row["time_since_delivered"] >= 60_000 for row in rows)
    assert all(row["times_delivered"] == 0 for row in rows)
    assert not any(result_of(r, entry_id) for entry_id in ahead)
    other = make_worker(
        r, {"echo": echo}, batch_size=None, consumer_name="c2", claim_idle_ms=60_000
    )
    deadline = 200 + len(ids)
    while not drained(r, len(ids)) and deadline:
        other.poll_once()
        deadline -= 1
    assert drained(r, len(ids))
    assert all(result_of(r, entry_id) for entry_id in ids)


def test_a_read_ahead_whose_reply_is_never_read_is_reclaimed(r: redis.Redis) -> None:
    """A failure (any error the worker backs off from: Worker.step) drops the read
    ahead: its connection is closed with the reply unread, as when the network dies
    before the reply arrives. Redis delivered its entries to this consumer all the
    same: XAUTOCLAIM hands them out again after CLAIM_IDLE_MS, and they run."""
    ids = fill(r, 600)
    worker = make_worker(r, {"echo": echo}, batch_size=None, claim_idle_ms=200)
    ran = warm_up(worker, r)
    count = worker.reader.read_size.count()
    batch = ids[ran : ran + worker.poll_once()]
    # Redis has done what was sent, not waited for: the ack, and the read ahead.
    wait_for(lambda: all(result_of(r, entry_id) for entry_id in batch), timeout_s=10)
    read_ahead_answered(worker)
    ahead = [row["message_id"] for row in pending(r)]
    assert len(ahead) == count
    dropped = worker.reader.drop_read_ahead()  # as Worker.step does on a failure
    worker.ownership.let_go([m.entry_id for m in dropped])
    # Its reply was read during the batch if it had arrived by then (its entries, taken
    # in hand, are let go), else it is dropped unread: either way they stay pending.
    assert [m.entry_id for m in dropped] in ([], ahead)
    assert not worker.reader.ahead.outstanding
    wait_for(lambda: worker.poll_once() == 0 and drained(r, len(ids)), timeout_s=60)
    assert all(result_of(r, entry_id) for entry_id in ids)
    assert all(result_of(r, entry_id) for entry_id in ahead)


def test_a_stop_during_a_long_task_hands_back_the_entries_read_ahead_at_once(
    r: redis.Redis,
) -> None:
    """SIGTERM while a task runs long in a batch of tiny ones: the heartbeat hands back
    the batch's unstarted entries and those read ahead at once, not when the task
    ends (docs/guarantees.md)."""
    released: list[bool] = []
    worker: Worker

    def linger() -> None:
        worker.stopping.set()  # SIGTERM, while this task runs on
        ahead = set(ahead_ids)

        def handed_back() -> bool:
            rows = [row for row in pending(r) if row["message_id"] in ahead]
            return len(rows) == len(ahead) and all(
                row["time_since_delivered"] >= 60_000 for row in rows
            )

        released.append(wait_for(handed_back, timeout_s=20) or True)

    def answered() -> None:  # taken at the first look already, or at the next
        read_ahead_answered(worker)

    worker, first = ramp_worker(r, {"linger": linger, "answered": answered})
    # 128. The read ahead is taken in hand once answered, looked for from halfway
    # every TAKE_EVERY entries: the task before the second look waits for the answer.
    look = 64 + TAKE_EVERY
    assert look <= 100
    batch = [*fill(r, look - 1), add_entry(r, "answered"), *fill(r, 100 - look)]
    batch += [add_entry(r, "linger"), *fill(r, 27)]
    ahead_ids = fill(r, 128)
    with worker.running():
        assert warm_up(worker, r) == len(first)
        next_read_128(worker)
        assert worker.poll_once() == len(batch)  # taken: 101 ran, 27 went back
    assert released == [True]
    assert not any(result_of(r, entry_id) for entry_id in ahead_ids)
    assert all(result_of(r, entry_id) for entry_id in batch[:101])


def test_a_batch_running_long_takes_the_entries_read_ahead_in_hand(
    r: redis.Redis,
) -> None:
    """At the batch's first ACK_INTERVAL_MS the read ahead is collected and held, so the
    heartbeat renews those claims while the batch goes on."""
    held: list[int] = []
    worker: Worker

    def slow(n: int) -> None:
        held.append(len(worker.ownership.renewable()))
        time.sleep(0.002)

    worker = make_worker(r, {"echo": echo, "slow": slow}, batch_size=None,
                         ack_interval_ms=50, claim_idle_ms=60_000)  # fmt: skip
    first = fill(r, 127)  # the ramp: 1 + 2 + ... + 64
    slow_ids = fill(
        r, 128, "slow"
    )  # read as one batch of 128 (read ahead at its start)
    rest = fill(r, 300)
    assert warm_up(worker, r) == len(first)
    next_read_128(worker)
    assert worker.poll_once() == len(slow_ids)  # about 128 x 2 ms: past 50 ms
    assert held[0] == len(slow_ids)
    # Past the first flush: what was left of the batch, plus the 128 read ahead.
    assert max(held) > len(slow_ids)
    while worker.poll_once():
        pass
    ids = first + slow_ids + rest
    assert drained(r, len(ids))
    assert all(result_of(r, entry_id) for entry_id in ids)


def acked(worker: Worker) -> float:
    value: float = worker.metrics.messages.labels("echo", "acked")._value.get()
    return value


def test_tiny_tasks_a_batch_ack_goes_ahead_and_is_read_during_the_next(
    r: redis.Redis,
) -> None:
    ids, worker, ran = warmed(r)
    assert not worker.outcomes.ack_in_flight  # nothing was in hand: waited for
    taken = worker.poll_once()
    batch = ids[ran : ran + taken]
    # The next batch was in hand: the ack was sent, its reply not waited for.
    assert worker.outcomes.ack_in_flight
    assert acked(worker) == ran
    wait_for(lambda: all(result_of(r, entry_id) for entry_id in batch), timeout_s=10)
    assert not {row["message_id"] for row in pending(r)} & set(batch)
    # During the next batch (once arrived; at the latest before its own ack) its
    # reply was read, and the batch counted.
    nxt = worker.poll_once()
    assert acked(worker) >= ran + taken
    while worker.poll_once():
        pass
    assert not worker.outcomes.ack_in_flight  # settled before a read that may wait
    assert acked(worker) == len(ids) and nxt
    assert drained(r, len(ids))


def test_an_ack_sent_ahead_under_maxmemory_acknowledges_without_results(
    own: redis.Redis,
) -> None:
    """Redis refuses the HSET (and so the MULTI) of an ack sent ahead: read during
    the next batch, it is redone as a plain XACK, the results dropped and counted,
    as a waited-for ack does (docs/guarantees.md)."""
    ids = fill(own, 1000)
    worker = make_worker(own, {"echo": echo}, batch_size=None, claim_idle_ms=60_000)
    ran = warm_up(worker, own)
    own.config_set("maxmemory", 1)  # over it already: writes that allocate are refused
    try:
        taken = worker.poll_once()
        assert worker.outcomes.ack_in_flight
        dropped = worker.metrics.results_dropped
        while worker.poll_once():
            pass
    finally:
        own.config_set("maxmemory", 0)
    assert drained(own, len(ids))
    assert dropped._value.get() == len(ids) - ran
    assert not any(result_of(own, entry_id) for entry_id in ids[ran : ran + taken])
    assert acked(worker) == len(ids)
