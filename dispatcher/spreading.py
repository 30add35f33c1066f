"""Which partition each message of a request goes to (PARTITIONS), and the writes.

- A request with `partition_key`: all of it to that key's partition (any dispatcher
  process picks the same), so the key's messages keep their order.
- Otherwise round-robin from a start: the next of this process's counter, or, with an
  Idempotency-Key, one derived from the key, so a retry splits the same way.
- A paced request (`delay`): all of it to one partition.

All of one partition's messages are written in one step (MULTI/EXEC or the send
script), partition after partition in order. Every check that can refuse a request
(validation, backlog, memory, the paced cap) runs before the first write, so a refused
request writes nothing. A Redis failure after the first partition's write leaves the
earlier partitions written: the 503 (PartlyWrittenError) names their task IDs, and a
retry with the same Idempotency-Key writes only the missing partitions (each one keeps
its own record of the key) and answers with every ID.
"""

import dataclasses
import itertools
from collections.abc import Callable

import redis

from dispatcher.errors import DispatcherError
from dispatcher.validation import DispatchRequest
from pipeline_core import partitions
from pipeline_core.keys import Queue
from pipeline_core.replication import NotReplicatedError
from pipeline_core.send_script import Written

Write = Callable[[Queue, DispatchRequest], Written]


class PartlyWrittenError(DispatcherError):
    """Some partitions' messages were written, then a write failed."""

    def __init__(self, task_ids: list[str], error: Exception) -> None:
        super().__init__(f"{len(task_ids)} messages written before: {error!r}")
        self.task_ids, self.error = task_ids, error


class Spreader:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._turns = itertools.count()

    def groups(self, order: DispatchRequest, key: str | None) -> dict[int, list[int]]:
        """Message positions by partition."""
        count, partition_count = len(order.payloads), self.queue.partitions
        if partition_count == 1:
            return {0: list(range(count))}
        if order.partition_key is not None:
            return {partitions.of_key(order.partition_key, partition_count): [
                *range(count)]}  # fmt: skip
        if key is not None:
            start = partitions.of_key(key, partition_count)
        else:
            start = next(self._turns) % partition_count
        if order.delay_s > 0:
            return {start: list(range(count))}
        return partitions.spread(count, start, partition_count)

    def write(self, order: DispatchRequest, groups: dict[int, list[int]],
              write: Write) -> Written:  # fmt: skip
        """Each partition's messages in one step; the task IDs in request order."""
        queues = partitions.parts(self.queue)
        if len(groups) == 1 and len(queues) == 1:
            return write(queues[0], order)
        task_ids = [""] * len(order.payloads)
        replayed = True
        for index, positions in groups.items():
            part = dataclasses.replace(
                order, payloads=[order.payloads[p] for p in positions]
            )
            try:
                written = write(queues[index], part)
            except (redis.RedisError, NotReplicatedError) as error:
                done = [task_id for task_id in task_ids if task_id]
                if not done:
                    raise
                raise PartlyWrittenError(done, error) from error
            for position, entry_id in zip(positions, written.entry_ids, strict=True):
                task_ids[position] = partitions.task_id(self.queue, index, entry_id)
            replayed = replayed and written.replayed
        return Written(task_ids, replayed)
