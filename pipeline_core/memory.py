"""The queue's Redis memory: how much is used, and the budget new work must stay under.

Measured cheaply with INFO memory on the node that holds the queue: `used_memory` counts
everything in that Redis (the stream, results, dead letters, any other key), which is
right for the Redis the manifests ship, dedicated to one queue. The budget leaves room
under `maxmemory` for what accepted work still writes (acks, results, dead letters):
past the budget new work is refused; at maxmemory Redis itself refuses writes, and the
consumers still drain (docs/guarantees.md)."""

import logging
from dataclasses import dataclass

import redis

from pipeline_core import partitions
from pipeline_core.connection import Client, queue_node
from pipeline_core.keys import Queue
from pipeline_core.replies import reason

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Memory:
    used_bytes: int
    max_bytes: int  # Redis's maxmemory; 0: none set

    def budget_bytes(self, explicit: int, ratio: float) -> int:
        """MEMORY_BUDGET_BYTES when set, else MEMORY_BUDGET_RATIO of maxmemory; 0 when
        neither is known (no budget: Redis's own limit, if any, is all there is)."""
        return explicit or int(self.max_bytes * ratio)


UNKNOWN = Memory(0, 0)  # no budget can be kept


def read_memory(client: Client, queue: Queue) -> Memory:
    """INFO memory of the node holding the queue (with PARTITIONS, of the fullest of
    the partitions' nodes). A Redis that refuses INFO (an ACL without it, a proxy that
    hides it) leaves no budget to keep: UNKNOWN, and a warning the first time."""
    if queue.partitions > 1:
        found = [read_memory(client, part) for part in partitions.parts(queue)]
        return max(found, key=lambda memory: memory.used_bytes)
    try:
        info = queue_node(client, queue).info("memory")
    except redis.ResponseError as error:
        if "unknown command" not in str(error) and reason(error) != "noperm":
            raise
        if not _warned:
            _warned.append(True)
            log.warning("cannot read redis memory: no memory budget is kept")
        return UNKNOWN
    return Memory(int(info["used_memory"]), int(info.get("maxmemory", 0)))


_warned: list[bool] = []
