"""The heartbeat thread: keeps the claims of held entries alive while their tasks run.

Without it, an entry whose task (or whose wait in the batch) lasts longer than
claim_idle_ms would be taken over by another consumer and run twice. It dies with the
process, so a killed or frozen consumer's entries still lapse and get reclaimed.
"""

import logging
import threading
import time
from types import TracebackType

import redis

from consumer.claims import Claims, ClaimScripts
from consumer.settings import Settings

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self, scripts: ClaimScripts, settings: Settings, claims: Claims
    ) -> None:
        self.scripts = scripts
        self.settings = settings
        self.claims = claims
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

    def beat(self) -> None:
        """Renew each renewable held claim once; mark those another consumer took."""
        s = self.settings
        with self.claims.renewing:
            started_s = time.monotonic()
            entry_ids = self.claims.renewable(s.task_timeout_s)
            owned = self.scripts.renew(s.stream, s.group, s.consumer_name, entry_ids)
            self.claims.renewed(started_s)
        lost = set(entry_ids) - set(owned)
        if lost:
            log.warning("claims taken over", extra={"entry_ids": sorted(lost)})
            self.claims.lose(lost)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                self.beat()
            except redis.RedisError:
                # The worker loop notices the outage too and reports it; the next beat
                # retries.
                log.debug("heartbeat failed", exc_info=True)
