"""Dead letters over every partition (PARTITIONS), for `pipeline dead` and the console.

A dead letter's ID names its partition as a task ID does: `p<i>-<entry ID>` (entry IDs
of two partitions' dead-letter streams can be equal). Lists merge the partitions'
streams in (entry ID, partition) order, so a qualified ID is a cursor. With P = 1 the
IDs are the dead-letter stream's entry IDs and all is pipeline_core.dead_letters.
"""

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline_core import dead_letters, partitions
from pipeline_core.connection import Client
from pipeline_core.dead_letters import NoSuchDeadLetterError
from pipeline_core.keys import Queue
from pipeline_core.task_state import InvalidTaskIdError

Letter = tuple[str, dict[str, str]]  # (dead-letter ID, the entry's fields)
QUALIFIED_RULE = "dead-letter IDs are p<partition>-<entry ID> (PARTITIONS)"


def scan(
    client: Client,
    queue: Queue,
    newest_first: bool = False,
    after: str | None = None,
    page: int = dead_letters.PAGE,
) -> Iterator[Letter]:
    """Every dead letter of every partition, oldest (or newest) first, starting just
    past the dead-letter ID `after` when given; `page`: entries a reply carries."""
    start = None if after is None else locate(queue, after)
    scans = []
    for index, part in enumerate(partitions.parts(queue)):
        bound, inclusive = None, False
        if start is not None:
            # Equal entry IDs go in partition order: in the partitions on the far
            # side of the cursor's, the entry with the cursor's own ID still follows.
            bound = start[2]
            inclusive = index < start[0] if newest_first else index > start[0]
        entries = dead_letters.scan(client, part.dead_letter_stream, newest_first,
                                    bound, (inclusive, page))  # fmt: skip
        scans.append(_keyed(entries, index))
    for _, index, dead_id, fields in heapq.merge(
        *scans, key=lambda item: item[:2], reverse=newest_first
    ):
        yield partitions.task_id(queue, index, dead_id), fields


def _keyed(
    entries: Iterable[Letter], index: int
) -> Iterator[tuple[tuple[int, int], int, str, dict[str, str]]]:
    for dead_id, fields in entries:
        ms, _, seq = dead_id.partition("-")
        yield (int(ms), int(seq)), index, dead_id, fields


def locate(queue: Queue, dead_id: str) -> tuple[int, Queue, str]:
    """The partition, its queue and the entry ID a dead-letter ID names."""
    if queue.partitions == 1:
        return 0, queue, dead_id  # dead_letters checks it as it always did
    try:
        return partitions.locate(queue, dead_id)
    except InvalidTaskIdError:
        raise NoSuchDeadLetterError(
            f"no dead letter {dead_id}: {QUALIFIED_RULE}, partition 0 to "
            f"{queue.partitions - 1}"
        ) from None


def letters(
    client: Client,
    queue: Queue,
    task: str | None = None,
    error: str | None = None,
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Dead letters, oldest first, filtered by task, error text and IDs."""
    if ids:
        found = [show(client, queue, dead_id, parse=False) for dead_id in ids]
        return [d for d in found if dead_letters.matches(d, task, error)]
    return [
        {"dead_id": dead_id, **fields}
        for dead_id, fields in scan(client, queue)
        if dead_letters.matches(fields, task, error)
    ]


def show(
    client: Client, queue: Queue, dead_id: str, parse: bool = True
) -> dict[str, Any]:
    """One dead letter, its payload parsed (text if it was never JSON) if `parse`."""
    _, part, entry_id = locate(queue, dead_id)
    read = dead_letters.show if parse else dead_letters.one
    return {**read(client, part, entry_id), "dead_id": dead_id}


def replay(
    client: Client, queue: Queue, chosen: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Each dead letter back onto its own partition's stream (dead_letters.replay):
    the dead-letter IDs and the new entries' IDs, both partition-qualified."""
    moved = []
    for index, part, its in _by_partition(queue, chosen):
        for one in dead_letters.replay(client, part, its):
            moved.append({
                "dead_id": partitions.task_id(queue, index, one["dead_id"]),
                "entry_id": partitions.task_id(queue, index, one["entry_id"]),
            })  # fmt: skip
    return moved


def purge(client: Client, queue: Queue, chosen: list[dict[str, Any]]) -> int:
    """Delete dead letters for good (dead_letters.purge); how many went."""
    return sum(
        dead_letters.purge(client, part, its)
        for _, part, its in _by_partition(queue, chosen)
    )


def count(client: Client, queue: Queue) -> int:
    """Dead letters in every partition."""
    return sum(
        int(client.xlen(part.dead_letter_stream)) for part in partitions.parts(queue)
    )


def _by_partition(
    queue: Queue, chosen: list[dict[str, Any]]
) -> list[tuple[int, Queue, list[dict[str, Any]]]]:
    """The chosen letters by partition ({"dead_id": entry ID}), in partition order."""
    groups: dict[int, tuple[Queue, list[dict[str, Any]]]] = {}
    for letter in chosen:
        index, part, entry_id = locate(queue, letter["dead_id"])
        groups.setdefault(index, (part, []))[1].append({"dead_id": entry_id})
    return [(index, part, its) for index, (part, its) in sorted(groups.items())]
