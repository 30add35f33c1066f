"""Batching: how many new entries the next XREADGROUP asks for (its COUNT). An explicit
BATCH_SIZE is used as is; unset, the count adapts to how long entries took to finish."""

import time

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


def next_count(got: int, elapsed_s: float) -> int:
    """The COUNT after a read that returned `got` entries, all finished in elapsed_s.

    As many as fit in TARGET_BATCH_S at the time per entry just seen, so tiny tasks
    come in hundreds and tasks of TARGET_BATCH_S or more one at a time, leaving the
    rest of the stream to idle consumers. Shrinks at once, but at most doubles: a
    burst of slow tasks arriving after fast ones is not taken in one large batch.
    Nothing seen (the first read, or a read that waited block_ms for nothing): 1, since
    a blocked read takes whatever arrives first, slow or not."""
    if got == 0:
        return 1
    fits = TARGET_BATCH_S * got / max(elapsed_s, 1e-9)
    return max(1, min(int(fits), 2 * got, MAX_COUNT))


class ReadSize:
    """The COUNT of each XREADGROUP: BATCH_SIZE if set, else next_count of the last
    read, timed from its return to the next read (which is when its batch is done)."""

    def __init__(self, batch_size: int | None) -> None:
        self.batch_size = batch_size
        self._got = 0
        self._returned_s = time.monotonic()

    def count(self) -> int:
        """The COUNT for the read about to start."""
        if self.batch_size is not None:
            return self.batch_size
        return next_count(self._got, time.monotonic() - self._returned_s)

    def returned(self, got: int) -> None:
        """A read just returned `got` entries: the clock of their batch starts."""
        self._got = got
        self._returned_s = time.monotonic()
