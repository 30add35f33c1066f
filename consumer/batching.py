"""Batching: how many new entries the next XREADGROUP asks for (its COUNT). An explicit
BATCH_SIZE is used as is; unset, the count adapts to how long entries took to finish."""

import time
from collections.abc import Callable

# Unset BATCH_SIZE: a batch aims at this much work. Long enough that the two round trips
# of a batch (XREADGROUP, then the ack's MULTI; under a millisecond) cost a few percent
# at most; short enough that entries waiting in a batch are never held long from an idle
# consumer, and that a batch's results are acknowledged soon after the work is done.
TARGET_BATCH_S = 0.05
# The most entries one consumer holds: what a crash re-runs at worst (a tiny task's
# share of TARGET_BATCH_S would otherwise be thousands). The raw limit reads as many.
MAX_COUNT = 500
# XAUTOCLAIM's COUNT when BATCH_SIZE is unset. The worker runs one claimed entry and
# hands the rest straight back, so this only sets how widely a call scans the pending
# list.
CLAIM_COUNT = 10
# Unset BATCH_SIZE: how long a consumer that found nothing keeps the count its last
# batch earned. Work arriving in bursts (requests of a few tasks, every few ms) is then
# read in one or two reads, not 1, 2, 4, ... with an ack and a round trip each (2
# consumers, 10 tasks sent from Python every 10 ms: p99 from send to start went from
# 2.3 to 1.7 ms). Past it, the consumer knows nothing of what will come and reads one.
IDLE_KEEP_S = 1.0


def next_count(got: int, elapsed_s: float) -> int:
    """The COUNT after a read that returned `got` entries, all finished in elapsed_s.

    As many as fit in TARGET_BATCH_S at the time per entry just seen, so tiny tasks
    come in hundreds and tasks of TARGET_BATCH_S or more one at a time, leaving the
    rest of the stream to idle consumers. Shrinks at once, but at most doubles: a
    burst of slow tasks arriving after fast ones is not taken in one large batch.
    Nothing seen (the first read, or one that found nothing): 1, since a blocked read
    takes whatever arrives first, slow or not (ReadSize keeps the last batch's count
    for IDLE_KEEP_S first)."""
    if got == 0:
        return 1
    fits = TARGET_BATCH_S * got / max(elapsed_s, 1e-9)
    return max(1, min(int(fits), 2 * got, MAX_COUNT))


class ReadSize:
    """The COUNT of each XREADGROUP: BATCH_SIZE if set, else next_count of the last
    read, timed from its return to the next read (which is when its batch is done).
    After reads that found nothing: the count the last batch earned, for IDLE_KEEP_S
    after that batch ended, then 1."""

    def __init__(
        self, batch_size: int | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.batch_size = batch_size
        self._clock = clock
        self._got = 0
        self._returned_s = clock()
        # The count the last batch earned, and when that batch ended.
        self._earned, self._worked_s = 1, float("-inf")

    def count(self) -> int:
        """The COUNT for the read about to start."""
        if self.batch_size is not None:
            return self.batch_size
        now = self._clock()
        if self._got:
            self._earned = next_count(self._got, now - self._returned_s)
            self._worked_s = now
            return self._earned
        return self._earned if now - self._worked_s < IDLE_KEEP_S else 1

    def returned(self, got: int) -> None:
        """A read just returned `got` entries: the clock of their batch starts."""
        self._got = got
        self._returned_s = self._clock()
