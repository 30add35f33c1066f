"""The operators' reads over every partition (PARTITIONS), for `pipeline` and the
console: the group's state as totals, pending entries and tasks waiting to be due
merged across partitions, consumers (one per name), and a task by its ID. IDs shown
name their partition (`p<i>-<entry ID>`, pipeline_core.partitions); with P = 1 every
function reads the one stream exactly as before.
"""

from dataclasses import replace
from typing import Any

from pipeline_core import consumers as consumer_rules
from pipeline_core import delayed, partitions, task_state
from pipeline_core.connection import Client
from pipeline_core.group_state import (
    ConsumerState,
    GroupState,
    id_key,
    read_group_state,
)
from pipeline_core.keys import Queue
from pipeline_core.lag import LAG_COUNTED, LAG_ESTIMATED, LAG_FROM_REDIS, LAG_NO_GROUP

# A total's lag is as good as its worst partition's.
LAG_SOURCES = (LAG_NO_GROUP, LAG_ESTIMATED, LAG_COUNTED, LAG_FROM_REDIS)


def read_states(client: Client, queue: Queue) -> list[GroupState]:
    """Each partition's state (read_group_state), in partition order."""
    return [read_group_state(client, part) for part in partitions.parts(queue)]


def total(states: list[GroupState]) -> GroupState:
    """The queue's state from its partitions': counts summed, the oldest ages the
    largest, consumers merged; the one state itself when there is one."""
    if len(states) == 1:
        return states[0]
    sources = {s.lag_source for s in states}
    dues = [s.earliest_due_s for s in states if s.earliest_due_s is not None]
    return GroupState(
        stream_exists=any(s.stream_exists for s in states),
        group_exists=all(s.group_exists for s in states),
        length=sum(s.length for s in states), lag=sum(s.lag for s in states),
        lag_source=next(source for source in LAG_SOURCES if source in sources),
        pending=sum(s.pending for s in states),
        consumers=merged_consumers(states),
        oldest_pending_age_s=_largest([s.oldest_pending_age_s for s in states]),
        oldest_undelivered_age_s=_largest(
            [s.oldest_undelivered_age_s for s in states]
        ),
        dead_letters=sum(s.dead_letters for s in states),
        now_s=max(s.now_s for s in states), delayed=sum(s.delayed for s in states),
        earliest_due_s=min(dues) if dues else None,
    )  # fmt: skip


def _largest(ages: list[float | None]) -> float | None:
    known = [age for age in ages if age is not None]
    return max(known) if known else None


def merged_consumers(states: list[GroupState]) -> tuple[ConsumerState, ...]:
    """One row per consumer name (a consumer is a member of every partition's group):
    its pending entries summed, its idle time the shortest."""
    merged: dict[str, ConsumerState] = {}
    for state in states:
        for c in state.consumers:
            seen = merged.get(c.name)
            merged[c.name] = c if seen is None else ConsumerState(
                c.name, seen.pending + c.pending, min(seen.idle_s, c.idle_s)
            )  # fmt: skip
    return tuple(merged.values())


def prune(client: Client, queue: Queue, names: list[str], idle_ms: int) -> list[str]:
    """Delete each named consumer from every partition's group where, at that
    instant, it still qualifies (consumers.prune); the names deleted anywhere."""
    deleted: set[str] = set()
    for part in partitions.parts(queue):
        deleted.update(consumer_rules.prune(client, part, names, idle_ms))
    return [name for name in names if name in deleted]


def pending(
    client: Client,
    queue: Queue,
    count: int,
    consumer: str | None = None,
    filters: tuple[int, str | None] = (0, None),
) -> list[dict[str, Any]]:
    """XPENDING rows of every partition, oldest first by (entry ID, partition), at
    most `count`, `message_id` partition-qualified (`entry_id`: in its stream).
    `filters`: the least idle time (ms, 0: any), a qualified cursor to start past."""
    min_idle_ms, after = filters
    start = None if after is None else _cursor(queue, after)
    rows = []
    for index, part in enumerate(partitions.parts(queue)):
        low = "-"
        if start is not None:  # equal IDs go in partition order (see dead_partitions)
            low = start[1] if index > start[0] else f"({start[1]}"
        reply = client.xpending_range(
            part.stream, part.group, low, "+", count,
            consumername=consumer, idle=min_idle_ms or None,
        )  # fmt: skip
        rows += [(id_key(str(row["message_id"])), index, row) for row in reply]
    rows.sort(key=lambda found: found[:2])
    return [
        {**row, "entry_id": str(row["message_id"]),
         "message_id": partitions.task_id(queue, index, str(row["message_id"]))}
        for _, index, row in rows[:count]
    ]  # fmt: skip


def _cursor(queue: Queue, after: str) -> tuple[int, str]:
    """A cursor's partition and entry ID; with P = 1 the ID as given (Redis judges
    it, as it always did)."""
    if queue.partitions == 1:
        return 0, after
    index, _, entry_id = partitions.locate(queue, after)
    return index, entry_id


def waiting(client: Client, queue: Queue, count: int) -> list[delayed.Waiting]:
    """The tasks waiting to be due in every partition, the earliest first, at most
    `count`, their IDs partition-qualified."""
    found = []
    for index, part in enumerate(partitions.parts(queue)):
        found += [
            replace(one, task_id=partitions.task_id(queue, index, one.task_id))
            for one in delayed.waiting(client, part, count)
        ]
    return sorted(found, key=lambda one: one.due_ms)[:count]


def task(
    client: Client, queue: Queue, given: str, cancel: bool = False
) -> task_state.TaskStatus | None:
    """The task a task ID names (task_state.status), or cancel it (task_state.cancel);
    InvalidTaskIdError for an ID of another form."""
    _, part, entry_id = partitions.locate(queue, given)
    if cancel:
        return task_state.cancel(client, part, entry_id)
    return task_state.status(client, part, entry_id)


def task_body(queue: Queue, given: str, found: task_state.TaskStatus) -> dict[str, Any]:
    """The task's status as GET /tasks answers it, every ID in it partition-qualified
    (its own, its entry's, its dead letter's)."""
    index = partitions.locate(queue, given)[0]
    body = found.as_json()
    for name in ("id", "entry_id", "dead_letter_id"):
        if name in body:
            body[name] = partitions.task_id(queue, index, body[name])
    return body
