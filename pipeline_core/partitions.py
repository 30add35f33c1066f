"""One queue over several streams: PARTITIONS (default 1, everything as one stream).

With P > 1 the queue `tasks` is P queues, each a `Queue` of its own whose every key
(stream, dead letters, results, delayed set, idempotency records, ...) carries the
partition's hash tag, so on Redis Cluster each partition lives in one slot and its
MULTI/EXEC blocks and scripts never cross slots:

    {tasks:0}                 partition 0's stream (XPENDING {tasks:0} workers works)
    {tasks:0}:dead            its dead letters
    {tasks:0}:results:<min>   its results, and so on for every key of keys.py

Partition i's hash tag is `tasks:i` when its slot lies in the middle half of the i-th
of P equal ranges of the 16,384 slots, else `tasks:i.n` with the smallest n that does:
`redis-cli --cluster create` gives M masters M equal ranges, so each master holds
about P/M partitions. `pipeline status` prints the names. Changing PARTITIONS renames
the streams: drain the queue first (docs/partitions.md).

A task's ID names its partition when P > 1: `p<i>-<entry ID>` (an entry ID alone
could exist in two partitions' streams); with P = 1 it is the entry ID, as always.
"""

import functools
import hashlib
import itertools
import re

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from pipeline_core.keys import Queue
from pipeline_core.task_state import InvalidTaskIdError, check_task_id
from pipeline_core.wire import ENTRY_ID

QUALIFIED = re.compile(r"p(\d{1,2})-(\d+-\d+)")
QUALIFIED_RULE = "must be p<partition>-<entry ID>, as /dispatch answered it"


def parts(queue: Queue) -> tuple[Queue, ...]:
    """The queue's partitions in order; (queue,) itself when PARTITIONS is 1."""
    if queue.partitions == 1:
        return (queue,)
    return _parts(queue.stream, queue.group, queue.partitions)


@functools.cache
def _parts(base: str, group: str, count: int) -> tuple[Queue, ...]:
    streams = [partition_stream(base, index, count) for index in range(count)]
    return tuple(Queue(s, group, f"{s}:dead") for s in streams)


def partition_stream(base: str, index: int, count: int) -> str:
    """Partition `index`'s stream: its own hash tag, in the middle of its slot range."""
    width = REDIS_CLUSTER_HASH_SLOTS / count
    low, high = (index + 0.25) * width, (index + 0.75) * width
    for n in itertools.count():
        tag = f"{base}:{index}" if n == 0 else f"{base}:{index}.{n}"
        if low <= key_slot(tag.encode()) < high:
            return "{" + tag + "}"
    raise AssertionError("unreachable: itertools.count() never ends")


def task_id(queue: Queue, index: int, entry_id: str) -> str:
    """The ID a caller sees of the task whose entry (or delayed ID) is `entry_id`."""
    return entry_id if queue.partitions == 1 else f"p{index}-{entry_id}"


def locate(queue: Queue, given: str) -> tuple[int, Queue, str]:
    """The partition, its Queue and the entry ID a task ID names (InvalidTaskIdError
    for an ID of another form, or of a partition this queue does not have)."""
    if queue.partitions == 1:
        return 0, queue, check_task_id(given)
    found = QUALIFIED.fullmatch(given)
    if found is None or int(found[1]) >= queue.partitions:
        raise InvalidTaskIdError(given, QUALIFIED_RULE)
    index = int(found[1])
    return index, parts(queue)[index], check_task_id(found[2])


def is_id(queue: Queue, given: str) -> bool:
    """Whether `given` has the form of this queue's IDs (of a task, a dead letter, a
    pending entry): p<partition>-<entry ID> with P > 1, else an entry ID."""
    if queue.partitions == 1:
        return bool(ENTRY_ID.fullmatch(given))
    try:
        locate(queue, given)
    except InvalidTaskIdError:
        return False
    return True


def of_key(partition_key: str, count: int) -> int:
    """The partition every message with this partition key goes to (any process)."""
    digest = hashlib.sha256(partition_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def spread(count: int, start: int, partitions: int) -> dict[int, list[int]]:
    """Message positions by partition: round-robin from `start` (in partition order)."""
    groups: dict[int, list[int]] = {}
    for position in range(count):
        groups.setdefault((start + position) % partitions, []).append(position)
    return dict(sorted(groups.items()))
