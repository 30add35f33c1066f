"""With PARTITIONS > 1 a consumer process runs one Worker per partition and takes turns
over them: each turn is one poll (a stale entry, or a batch of new ones sized as
consumer/batching.py says, about 50 ms of work), so no partition waits more than one
turn of the others while it has work. No coordination between consumers: every one
reads every partition as a member of that partition's group, so a consumer joining or
leaving changes nothing but who reads; a crashed one's entries are reclaimed
(XAUTOCLAIM) by the others' turns on that partition, as with one stream.

A read waits for entries only when a whole turn found none: then each partition's read
blocks IDLE_TURN_MS / P (at least 1 ms), so an idle consumer looks at every partition
about every IDLE_TURN_MS, and a task sent to an idle queue starts within about that.
While any partition has work, reads of the others do not wait at all.
"""

import contextlib
import threading
import time
from collections.abc import Sequence

from consumer.worker import Worker

IDLE_TURN_MS = 100


def rotate(workers: Sequence[Worker], stopping: threading.Event) -> None:
    """Poll the workers in turn until stopping is set."""
    idle_block_ms = max(
        1, min(workers[0].settings.block_ms, IDLE_TURN_MS // len(workers))
    )
    with contextlib.ExitStack() as stack:
        for worker in workers:
            stack.enter_context(worker.running())
        found = 1
        while not stopping.is_set():
            now = time.monotonic()
            ready = [worker for worker in workers if worker.recovery.resume_s <= now]
            if not ready:  # every partition's Redis failed: wait for the first retry
                stopping.wait(min(worker.recovery.resume_s for worker in workers) - now)
                continue
            block_ms = 0 if found else idle_block_ms
            found = 0
            for worker in ready:
                if stopping.is_set():
                    break
                found += worker.step(block_ms)


def progress_s(workers: Sequence[Worker]) -> float:
    """When the loop last moved on: the liveness probe's clock."""
    return max(worker.progress_s for worker in workers)
