"""The heartbeat thread: keeps the claims of held entries alive while their tasks run.

Without it, an entry whose task (or whose wait in the batch) lasts longer than
claim_idle_ms would be taken over by another consumer and run twice. It dies with the
process, so a killed or frozen consumer's entries still lapse and get reclaimed.
"""

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from consumer.background import background
from consumer.ownership import Ownership
from pipeline_core.replies import FAILURES

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self, ownership: Ownership, interval_s: float, stopping: threading.Event
    ) -> None:
        self.ownership = ownership
        self.interval_s = interval_s
        self.stopping = stopping  # SIGTERM: the worker is asked to stop
        self._stop = threading.Event()

    def running(self) -> AbstractContextManager[None]:
        """The thread runs for the duration of the block."""
        return background(self._run, "heartbeat", self._stop)

    def _run(self) -> None:
        released = False
        while not self._stop.is_set():
            if not released and self.stopping.wait(self.interval_s):
                # Asked to stop while a task runs: its batch-mates go back at once,
                # not when the task ends (it may outlast the grace period).
                released = self._try(self.ownership.release_unstarted)
            elif released:
                self._stop.wait(self.interval_s)
            if not self._stop.is_set():
                self._try(self.ownership.renew)

    def _try(self, action: Callable[[], object]) -> bool:
        try:
            action()
        except FAILURES:
            # The worker loop notices the outage too and reports it; the next beat
            # retries.
            log.debug("heartbeat failed", exc_info=True)
            return False
        return True
