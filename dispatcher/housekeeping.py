"""Trimming dead letters by age (DEAD_LETTER_MAX_AGE_S), done by the dispatcher.

Why here and not in the consumers: every deletion of dead letters by us is counted in a
hash consumers cannot write (pipeline_core.dead_letters), so a wipe with a stolen
consumer password shows as dead letters gone beyond that count. Every
HOUSEKEEPING_INTERVAL_S one dispatcher process, whichever takes the lock, trims (by
Redis's clock: TIME inside the script), each partition (PARTITIONS) under its own lock.
With no dispatcher running, dead letters are kept longer, never lost early.
"""

import logging
import threading

from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.dead_letters import trim_by_age
from pipeline_core.keys import Queue
from pipeline_core.replies import FAILURES

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 60.0
LOCK_MS = 55_000  # one trim a minute, whichever process or replica takes it first


def lock_key(queue: Queue) -> str:
    return queue.key("housekeeping:lock")


def trim_once(client: Client, queue: Queue, max_age_s: int) -> int | None:
    """Trim unless another process took this interval; None if it did."""
    if not client.set(lock_key(queue), "1", nx=True, px=LOCK_MS):
        return None
    removed = trim_by_age(client, queue, max_age_s)
    if removed:
        log.info("dead letters past their age deleted", extra={"count": removed})
    return removed


def trim_all(client: Client, queue: Queue, max_age_s: int) -> int:
    """trim_once on every partition (each has its own lock, dead letters and count,
    in its own slot); how many went in the partitions this call trimmed."""
    return sum(
        trim_once(client, part, max_age_s) or 0 for part in partitions.parts(queue)
    )


class Housekeeper:
    """Trims every HOUSEKEEPING_INTERVAL_S until `stopping` is set (a daemon thread of
    each dispatcher process); Redis errors are logged once per outage."""

    def __init__(
        self,
        client: Client,
        queue: Queue,
        max_age_s: int,
        stopping: threading.Event | None = None,
    ) -> None:
        self.client, self.queue, self.max_age_s = client, queue, max_age_s
        self.stopping = stopping or threading.Event()

    def run(self) -> None:
        failing = False
        while True:
            try:
                trim_all(self.client, self.queue, self.max_age_s)
                failing = False
            except FAILURES:
                if not failing:
                    log.warning("dead-letter trimming failed", exc_info=True)
                failing = True
            if self.stopping.wait(HOUSEKEEPING_INTERVAL_S):
                return


def start_housekeeper(client: Client, queue: Queue, max_age_s: int) -> None:
    """The trimming thread; none when DEAD_LETTER_MAX_AGE_S is 0 (kept forever)."""
    if not max_age_s:
        return
    keeper = Housekeeper(client, queue, max_age_s)
    threading.Thread(target=keeper.run, name="housekeeping", daemon=True).start()
