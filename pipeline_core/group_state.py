"""The one reading of a queue's state, used by the metrics collector, the dispatcher's
backpressure, `pipeline status` and everything after them.

Lag (entries never delivered to the group) comes from XINFO GROUPS. Redis reports it as
NULL when it cannot tell (entries after the group's position were deleted); that NULL
is handled here and nowhere else: the undelivered entries are counted, up to
LAG_COUNT_LIMIT; past that, XLEN minus pending stands in (an upper bound, since trimming
never removes an entry the group still needs). `lag_source` says which it was.
"""

import time
from dataclasses import dataclass
from typing import Any

import redis

from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.wire import entry_ms, stream_entries

LAG_COUNT_LIMIT = 100  # entries read (whole) to count a NULL lag: bounded and cheap
LAG_FROM_REDIS, LAG_COUNTED, LAG_ESTIMATED, LAG_NO_GROUP = (
    "redis", "counted", "estimated", "no group"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConsumerState:
    name: str
    pending: int
    idle_s: float  # since its last attempted interaction with Redis


@dataclass(frozen=True, slots=True)
class GroupState:
    """A queue as Redis holds it now. Ages are seconds since the enqueue time an
    entry ID records, None when there is no such entry."""

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

    @property
    def backlog(self) -> int:
        """Entries the group has still to finish: lag + pending."""
        return self.lag + self.pending

    def active_consumers(self, within_s: float) -> int:
        return sum(1 for c in self.consumers if c.idle_s < within_s)


def age_s(entry_id: str | None, now_s: float | None = None) -> float | None:
    """Seconds since the enqueue time an entry ID records (never negative)."""
    if entry_id is None:
        return None
    now_s = time.time() if now_s is None else now_s
    return max(0.0, now_s - entry_ms(entry_id) / 1000)


def read_group_state(client: Client, queue: Queue) -> GroupState:
    """Everything at once, in two or three round trips (pipelined, one slot)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.xinfo_stream(queue.stream)
        pipe.xinfo_groups(queue.stream)
        pipe.xlen(queue.dead_letter_stream)
        info, groups, dead = pipe.execute(raise_on_error=False)
    dead_letters = _int(dead)
    if _no_such_key(info):  # no stream: nothing dispatched yet
        return GroupState(dead_letters=dead_letters)
    _raise_if_error(info, groups, dead)
    length, last_id = int(info["length"]), str_or_none(info["last-generated-id"])
    row = _group_row(groups, queue.group)
    if row is None:  # no consumer has created the group yet: everything waits
        first = info.get("first-entry")
        return GroupState(
            stream_exists=True, length=length, lag=length, dead_letters=dead_letters,
            last_generated_id=last_id,
            oldest_undelivered_age_s=age_s(first[0] if first else None),
        )  # fmt: skip
    return _with_group(client, queue, row, length, last_id, dead_letters)


def read_backlog(client: Client, queue: Queue) -> int:
    """Just lag + pending, for the dispatcher's hot path: one XINFO GROUPS."""
    try:
        groups = client.xinfo_groups(queue.stream)
    except redis.ResponseError as error:
        if _no_such_key(error):
            return 0  # no stream yet
        raise
    row = _group_row(groups, queue.group)
    if row is None:
        return _int(client.xlen(queue.stream))
    pending = int(row["pending"])
    return _lag(client, queue, row, pending)[0] + pending


def _with_group(
    client: Client,
    queue: Queue,
    row: dict[str, Any],
    length: int,
    last_id: str | None,
    dead_letters: int,
) -> GroupState:
    pending, delivered = int(row["pending"]), str(row["last-delivered-id"])
    lag, source = _lag(client, queue, row, pending, length)
    with client.pipeline(transaction=False) as pipe:
        pipe.xpending(queue.stream, queue.group)
        pipe.xinfo_consumers(queue.stream, queue.group)
        pipe.xrange(queue.stream, min=f"({delivered}", count=1)
        summary, consumers, first = pipe.execute()
    undelivered = stream_entries(first)
    return GroupState(
        stream_exists=True, group_exists=True, length=length, lag=lag,
        lag_source=source, pending=pending,
        consumers=tuple(_consumer(c) for c in consumers),
        oldest_pending_age_s=age_s(str_or_none(summary["min"])) if pending else None,
        oldest_undelivered_age_s=age_s(undelivered[0][0] if undelivered else None),
        dead_letters=dead_letters, last_generated_id=last_id,
        last_delivered_id=delivered,
    )  # fmt: skip


def _lag(
    client: Client,
    queue: Queue,
    row: dict[str, Any],
    pending: int,
    length: int | None = None,
) -> tuple[int, str]:
    if row["lag"] is not None:
        return int(row["lag"]), LAG_FROM_REDIS
    after = f"({row['last-delivered-id']}"
    counted = len(
        stream_entries(client.xrange(queue.stream, min=after, count=LAG_COUNT_LIMIT))
    )
    if counted < LAG_COUNT_LIMIT:
        return counted, LAG_COUNTED
    length = _int(client.xlen(queue.stream)) if length is None else length
    return max(counted, length - pending), LAG_ESTIMATED


def _group_row(groups: Any, group: str) -> dict[str, Any] | None:
    for row in groups:
        if row["name"] == group:
            found: dict[str, Any] = row
            return found
    return None


def _consumer(row: dict[str, Any]) -> ConsumerState:
    return ConsumerState(str(row["name"]), int(row["pending"]), int(row["idle"]) / 1000)


def _no_such_key(reply: object) -> bool:
    return isinstance(reply, redis.ResponseError) and "no such key" in str(reply)


def _raise_if_error(*replies: object) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _int(reply: object) -> int:
    if isinstance(reply, Exception):
        raise reply
    return reply if isinstance(reply, int) else 0


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
