"""The heartbeat thread: keeps the claims of held entries alive while their tasks run.

Without it, an entry whose task (or whose wait in the batch) lasts longer than
claim_idle_ms would be taken over by another consumer and run twice. It dies with the
process, so a killed or frozen consumer's entries still lapse and get reclaimed.
"""

import logging
import threading
from types import TracebackType

import redis

from consumer.ownership import Ownership

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, ownership: Ownership, interval_s: float) -> None:
        self.ownership = ownership
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.ownership.renew()
            except redis.RedisError:
                # The worker loop notices the outage too and reports it; the next beat
                # retries.
                log.debug("heartbeat failed", exc_info=True)
