"""A group's lag (entries never delivered to it), and the backlog (lag + pending) the
dispatcher and senders check before each write.

Lag comes from XINFO GROUPS. Redis reports it as NULL when it cannot tell (entries
after the group's position were deleted); that NULL is handled here and nowhere else:
the undelivered entries are counted, up to LAG_COUNT_LIMIT; past that, XLEN minus
pending stands in (an upper bound, since trimming never removes an entry the group
still needs). The LAG_* names say which it was (GroupState.lag_source).
"""

from typing import Any

import redis

from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.wire import stream_entries

LAG_COUNT_LIMIT = 100  # entries read (whole) to count a NULL lag: bounded and cheap
LAG_FROM_REDIS, LAG_COUNTED, LAG_ESTIMATED, LAG_NO_GROUP = (
    "redis", "counted", "estimated", "no group"
)  # fmt: skip


def read_backlog(client: Client, queue: Queue) -> int:
    """Just lag + pending, for the dispatcher's hot path: one XINFO GROUPS (one per
    partition, summed, with PARTITIONS)."""
    if queue.partitions > 1:
        return sum(read_backlog(client, part) for part in partitions.parts(queue))
    try:
        groups = client.xinfo_groups(queue.stream)
    except redis.ResponseError as error:
        if no_such_key(error):
            return 0  # no stream yet
        raise
    row = group_row(groups, queue.group)
    if row is None:
        return int_reply(client.xlen(queue.stream))
    pending = int(row["pending"])
    return read_lag(client, queue, row, pending)[0] + pending


def read_lag(
    client: Client,
    queue: Queue,
    row: dict[str, Any],
    pending: int,
    length: int | None = None,
) -> tuple[int, str]:
    if row["lag"] is not None:
        return int(row["lag"]), LAG_FROM_REDIS
    after = f"({row['last-delivered-id']}"
    reply = client.xrange(queue.stream, min=after, count=LAG_COUNT_LIMIT)
    counted = len(stream_entries(reply))
    if counted < LAG_COUNT_LIMIT:
        return counted, LAG_COUNTED
    length = int_reply(client.xlen(queue.stream)) if length is None else length
    return max(counted, length - pending), LAG_ESTIMATED


def group_row(groups: Any, group: str) -> dict[str, Any] | None:
    for row in groups:
        if row["name"] == group:
            found: dict[str, Any] = row
            return found
    return None


def no_such_key(reply: object) -> bool:
    return isinstance(reply, redis.ResponseError) and "no such key" in str(reply)


def int_reply(reply: object) -> int:
    if isinstance(reply, Exception):
        raise reply
    return reply if isinstance(reply, int) else 0
