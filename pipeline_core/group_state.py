"""The one reading of a queue's state, used by the metrics collector, the dispatcher's
backpressure and readiness, `pipeline status` and everything after them.

Lag (entries never delivered to the group) comes from pipeline_core/lag.py, where
Redis's NULL lag is handled; `lag_source` says how it was found.

Ages are measured against Redis's clock (TIME), not ours. An entry ID is its enqueue
time only if the producer let Redis choose it: another producer that wrote a future ID
pins every later ID to it, so `last_id_ahead_s` reports how far ahead the stream's last
ID is, and the ages of entries dated in the future read as unknown (None), not as 0.
"""

from dataclasses import dataclass, replace
from typing import Any

from pipeline_core.connection import Client, queue_node
from pipeline_core.dead_letters import AUDIT_FIELD
from pipeline_core.delayed import delayed_key
from pipeline_core.keys import Queue
from pipeline_core.lag import LAG_NO_GROUP, group_row, no_such_key, read_lag
from pipeline_core.wire import entry_ms, stream_entries

MAX_ID = "18446744073709551615-18446744073709551615"  # no entry can follow it


@dataclass(frozen=True, slots=True)
class ConsumerState:
    name: str
    pending: int
    idle_s: float  # since its last attempted interaction with Redis


@dataclass(frozen=True, slots=True)
class OtherGroup:
    """Another consumer group on the same stream: trimming keeps what it needs too."""

    name: str
    lag: int | None
    pending: int


@dataclass(frozen=True, slots=True)
class GroupState:
    """A queue as Redis holds it now. Ages are seconds since the enqueue time an
    entry ID records, None when there is no such entry (or its ID is in the future)."""

    stream_exists: bool = False
    group_exists: bool = False
    length: int = 0
    lag: int = 0
    lag_source: str = LAG_NO_GROUP
    pending: int = 0
    consumers: tuple[ConsumerState, ...] = ()
    oldest_pending_age_s: float | None = None
    oldest_undelivered_age_s: float | None = None
    dead_letters: int = 0
    last_generated_id: str | None = None
    last_delivered_id: str | None = None
    last_id_ahead_s: float = 0.0  # how far the last ID is past Redis's clock
    entries_added: int = 0  # ever, by XADD (XINFO STREAM)
    entries_read: int | None = None  # by the group, ever (None: Redis cannot tell)
    max_deleted_id: str | None = None  # the newest entry XDEL ever deleted
    oldest_pending_id: str | None = None
    dead_entries_added: int = 0
    dead_deleted_by_us: int = 0  # replay, purge and trimming by age count themselves
    dead_last_id_ahead_s: float = 0.0
    other_groups: tuple[OtherGroup, ...] = ()
    now_s: float = 0.0  # Redis's clock when read
    delayed: int = 0  # tasks waiting to be due: delayed ones and retries (backoff)
    earliest_due_s: float | None = None  # when the first of them is due (Unix s)

    @property
    def oldest_overdue_s(self) -> float:
        """How long past due the earliest waiting task is (0: none is): promotion
        is behind, or no consumer runs to promote."""
        if self.earliest_due_s is None:
            return 0.0
        return max(0.0, self.now_s - self.earliest_due_s)

    @property
    def backlog(self) -> int:
        """Entries the group has still to finish: lag + pending."""
        return self.lag + self.pending

    @property
    def ids_exhausted(self) -> bool:
        """The stream's last ID is the largest possible: XADD * fails for good."""
        return self.last_generated_id == MAX_ID

    @property
    def unfinished_deleted(self) -> int:
        """Entries the group had not finished that are gone from the stream: deleted by
        something else than our trimming, which removes only entries delivered and no
        longer pending (XADD/XTRIM MAXLEN, XDEL by hand). Entries ever removed (added -
        length) beyond those the group finished (read - pending); or, when Redis cannot
        count what the group read, an XDEL at or past a pending or undelivered entry."""
        if not self.group_exists:
            return 0
        if self.entries_read is not None:
            removed = self.entries_added - self.length
            return max(0, removed - (self.entries_read - self.pending))
        deleted = id_key(self.max_deleted_id)
        pending = self.oldest_pending_id
        return int(
            deleted != (0, 0)
            and (
                deleted > id_key(self.last_delivered_id)
                or (pending is not None and deleted >= id_key(pending))
            )
        )

    @property
    def dead_letters_deleted_elsewhere(self) -> int:
        """Dead letters gone from their stream that we did not delete: consumers only
        append there; our deletions count themselves (pipeline_core.dead_letters)."""
        removed = self.dead_entries_added - self.dead_letters
        return max(0, removed - self.dead_deleted_by_us)

    def active_consumers(self, within_s: float) -> int:
        return sum(1 for c in self.consumers if c.idle_s < within_s)


def id_key(entry_id: str | None) -> tuple[int, int]:
    """An entry ID as a pair that orders like the IDs; None as 0-0."""
    if not entry_id:
        return (0, 0)
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


def age_s(entry_id: str | None, now_s: float) -> float | None:
    """Seconds since the enqueue time an entry ID records; None for no entry, or for
    one dated in the future (its enqueue time is unknown)."""
    if entry_id is None:
        return None
    age = now_s - entry_ms(entry_id) / 1000
    return age if age >= -1.0 else None  # a second of slack for ID granularity


def read_group_state(client: Client, queue: Queue) -> GroupState:
    """Everything at once, in two or three round trips (pipelined, one slot)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.xinfo_stream(queue.stream)
        pipe.xinfo_groups(queue.stream)
        pipe.xinfo_stream(queue.dead_letter_stream)
        pipe.hget(queue.audit_key, AUDIT_FIELD)
        pipe.zcard(delayed_key(queue))
        pipe.zrange(delayed_key(queue), 0, 0, withscores=True)
        info, groups, dead, ours, waiting, first_due = pipe.execute(
            raise_on_error=False
        )
    _raise_if_error(groups if not no_such_key(groups) else None, ours)
    _raise_if_error(waiting, first_due)
    # TIME names no key: a cluster pipeline refuses it, so it goes to the queue's node.
    seconds, microseconds = queue_node(client, queue).time()
    now_s = seconds + microseconds / 1e6
    ours_n = int(ours) if isinstance(ours, str) and ours.isdigit() else 0
    due = first_due[0][1] / 1000 if first_due else None
    state = GroupState(now_s=now_s, dead_deleted_by_us=ours_n,
                       delayed=int(waiting), earliest_due_s=due)  # fmt: skip
    state = _with_dead(state, dead)
    if no_such_key(info):  # no stream: nothing dispatched yet
        return state
    _raise_if_error(info)
    last_id = str_or_none(info["last-generated-id"])
    state = replace(
        state, stream_exists=True, length=int(info["length"]),
        last_generated_id=last_id, last_id_ahead_s=_ahead_s(last_id, now_s),
        max_deleted_id=str_or_none(info.get("max-deleted-entry-id")),
        entries_added=int(info.get("entries-added") or 0),
        other_groups=tuple(_other(g) for g in groups if g["name"] != queue.group),
    )  # fmt: skip
    row = group_row(groups, queue.group)
    if row is None:  # no consumer has created the group yet: everything waits
        first = info.get("first-entry")
        oldest = age_s(first[0] if first else None, now_s)
        return replace(state, lag=state.length, oldest_undelivered_age_s=oldest)
    return _with_group(client, queue, row, state)


def _with_dead(state: GroupState, info: object) -> GroupState:
    """The dead-letter stream's length, newest deleted ID and last ID (XINFO STREAM)."""
    if no_such_key(info):  # no dead letter yet
        return state
    if not isinstance(info, dict):
        _raise_if_error(info)
        return state
    return replace(
        state, dead_letters=int(info["length"]),
        dead_entries_added=int(info.get("entries-added") or 0),
        dead_last_id_ahead_s=_ahead_s(
            str_or_none(info["last-generated-id"]), state.now_s
        ),
    )  # fmt: skip


def _ahead_s(last_id: str | None, now_s: float) -> float:
    return max(0.0, entry_ms(last_id) / 1000 - now_s) if last_id else 0.0


def _with_group(
    client: Client, queue: Queue, row: dict[str, Any], state: GroupState
) -> GroupState:
    pending, delivered = int(row["pending"]), str(row["last-delivered-id"])
    lag, source = read_lag(client, queue, row, pending, state.length)
    with client.pipeline(transaction=False) as pipe:
        pipe.xpending(queue.stream, queue.group)
        pipe.xinfo_consumers(queue.stream, queue.group)
        pipe.xrange(queue.stream, min=f"({delivered}", count=1)
        summary, consumers, first = pipe.execute()
    undelivered = stream_entries(first)
    oldest_pending = str_or_none(summary["min"]) if pending else None
    return replace(
        state, group_exists=True, lag=lag, lag_source=source, pending=pending,
        consumers=tuple(_consumer(c) for c in consumers),
        oldest_pending_age_s=age_s(oldest_pending, state.now_s),
        oldest_pending_id=oldest_pending,
        oldest_undelivered_age_s=age_s(
            undelivered[0][0] if undelivered else None, state.now_s
        ),
        last_delivered_id=delivered,
        entries_read=_int_or_none(row.get("entries-read")),
    )  # fmt: skip


def _other(row: dict[str, Any]) -> OtherGroup:
    lag = row["lag"]
    return OtherGroup(
        str(row["name"]), None if lag is None else int(lag), int(row["pending"])
    )


def _consumer(row: dict[str, Any]) -> ConsumerState:
    return ConsumerState(str(row["name"]), int(row["pending"]), int(row["idle"]) / 1000)


def _raise_if_error(*replies: object) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
