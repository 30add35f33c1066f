"""Ownership: the one answer to "is this entry still ours?".

A consumer holds the entries of the batch in hand (read or claimed), starts them one
at a time, and lets them go once acked, failed or dead-lettered. Its claims are renewed
by the heartbeat thread (renew); an entry another consumer took over meanwhile (this
one was frozen: SIGSTOP, a long GC pause, a partition) is marked lost and skipped. The
worker loop and the heartbeat thread share this record, guarded by a lock.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator

from redis.commands.core import Script
from redis.typing import EncodableT

from consumer.keeper import Beacon
from consumer.settings import Settings
from pipeline_core.connection import Client

log = logging.getLogger(__name__)

# Why Lua: "renew (or release) this entry only if this consumer still owns it" must read
# the pending list and XCLAIM in one atomic step, and a MULTI cannot branch on a read. A
# plain XCLAIM would take an entry back from a consumer that reclaimed it while we were
# paused. KEYS: the stream. ARGV: group, consumer, idle_ms, entry IDs... With idle_ms 0
# the claim is renewed (idle time reset, delivery count untouched, thanks to JUSTID).
# Otherwise the entry is released: its idle time set to idle_ms so any consumer's
# XAUTOCLAIM takes it at once, and its delivery count lowered by one, since this
# delivery never ran.
CLAIM_IF_OWNER = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local idle = tonumber(ARGV[3])
local owned = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local row = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if row and row[2] == consumer then
    if idle > 0 then
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle,
                 'RETRYCOUNT', math.max(row[4] - 1, 0), 'JUSTID')
    else
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    end
    owned[#owned + 1] = id
  end
end
return owned
"""


class Ownership:
    """Entry IDs this consumer holds: waiting in the batch, or running (since when)."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        beacon: Beacon | None = None,
        label: str = "",
    ) -> None:
        self.settings = settings
        self.beacon = beacon or Beacon()  # what the keeper process reads
        # Before each ID the keeper reads: a partition's `p<i>-` (one beacon serves
        # every partition's worker of the process; they take turns).
        self.label = label
        self._script = client.register_script(CLAIM_IF_OWNER)
        # Held for a whole renewal round trip. A release takes it too, so a renewal
        # that read the held IDs just before cannot undo the release.
        self._renewing = threading.Lock()
        self._lock = threading.Lock()
        # Held entry -> None (not started) or when its task's claim stops being renewed
        # (its start + its timeout).
        self._started: dict[str, float | None] = {}
        self._lost: set[str] = set()
        self._released: set[str] = set()
        self._renewed_s = time.monotonic()
        # Unrenewed this long, the claims may have been taken over (renewal_overdue).
        self._overdue_after_s = 2 * settings.heartbeat_interval_s

    def hold(self, entry_ids: Iterable[str], read_s: float | None = None) -> None:
        """A batch just read or claimed (so its claims are fresh), or read ahead: then
        its claims are only as fresh as `read_s` (monotonic, when the read was sent;
        the freeze check after a long wait renews them, or finds them taken over)."""
        with self._lock:
            if read_s is None:
                self._renewed_s = time.monotonic()
            elif self._started:
                self._renewed_s = min(self._renewed_s, read_s)
            else:
                self._renewed_s = read_s
            if not self._started:  # what a stop released belonged to an older batch
                self._released.clear()
            self._started.update(dict.fromkeys(entry_ids))
            self._publish_held()
        self.beacon.beat()

    def start(
        self, entry_id: str, timeout_s: float | None = None, now: float | None = None
    ) -> None:
        """Its task starts (now, or at monotonic `now`); it may run `timeout_s`
        (default TASK_TIMEOUT_S)."""
        now = time.monotonic() if now is None else now
        timeout_s = self.settings.task_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._started[entry_id] = now + timeout_s
        self.beacon.task(self.label + entry_id, now, timeout_s)

    @contextlib.contextmanager
    def finishing(self, entry_ids: list[str]) -> Iterator[None]:
        """Around an ack or a dead-letter of held entries: no renewal runs meanwhile
        (it would find them gone from the pending list and take them for stolen), and
        they are let go at once after."""
        with self._renewing:
            yield
            self.let_go(entry_ids)

    def let_go(self, entry_ids: list[str]) -> None:
        """Done with these (acked, failed, dead-lettered): no more renewals."""
        with self._lock:
            started, lost = self._started, self._lost
            for entry_id in entry_ids:
                started.pop(entry_id, None)
            if lost:
                lost.difference_update(entry_ids)
            self._publish_held()
            if not self._started:
                self.beacon.task("", 0.0)

    def _publish_held(self) -> None:
        if self.label:
            self.beacon.held([self.label + entry_id for entry_id in self._started])
        else:
            self.beacon.held(self._started)

    def still_ours(self, entry_id: str, now: float | None = None) -> bool:
        """Whether the entry may still be started or acked as ours (asked at
        monotonic `now`, or the clock's)."""
        self._check_after_freeze(now)
        if not self._lost:
            return True  # the usual case, checked per entry: no lock needed to see it
        with self._lock:
            return entry_id not in self._lost

    def taken_over(self, entry_ids: list[str]) -> list[str]:
        """Which of these another consumer took over (we would ack them late)."""
        self._check_after_freeze()  # once: a freeze's renewal marks every loss
        if not self._lost:
            return []
        with self._lock:
            return [entry_id for entry_id in entry_ids if entry_id in self._lost]

    def renew(self) -> None:
        """Renew each renewable held claim once; mark those another consumer took."""
        with self._renewing:
            started_s = time.monotonic()
            entry_ids = self.renewable()
            owned = self._owned(entry_ids, idle_ms=0)
            with self._lock:
                self._renewed_s = max(self._renewed_s, started_s)
            self.beacon.beat()
        lost = set(entry_ids) - set(owned)
        if lost:
            log.warning("claims taken over", extra={"entry_ids": sorted(lost)})
            with self._lock:
                self._lost.update(i for i in lost if i in self._started)

    def release(self, entry_ids: list[str]) -> int:
        """Hand entries back: claimable by any consumer now, their last delivery
        uncounted (once: a second release would uncount it twice). Returns how many
        were still ours to release."""
        with self._renewing:
            fresh = [i for i in entry_ids if i not in self._released]
            self.let_go(entry_ids)
            self._released.update(fresh)
            return len(self._owned(fresh, idle_ms=self.settings.claim_idle_ms))

    def release_unstarted(self) -> int:
        """On stop, while a task may still run for long: hand back at once the entries
        of the batch that have not started, so others need not wait for it."""
        with self._lock:
            unstarted = [i for i, s in self._started.items() if s is None]
        return self.release(unstarted)

    def renewable(self) -> list[str]:
        """Held IDs, minus a task running past its timeout: its claim is left to
        lapse, so a hung task's entry goes to another consumer after claim_idle_ms."""
        now = time.monotonic()
        with self._lock:
            return [i for i, d in self._started.items() if d is None or d > now]

    def renewal_overdue(self) -> bool:
        """True when the claims went unrenewed for two heartbeats: the process was
        frozen or the heartbeat stalled, and another consumer may have taken some."""
        # A float read is atomic: no lock.
        return time.monotonic() - self._renewed_s > self._overdue_after_s

    def _check_after_freeze(self, now: float | None = None) -> None:
        # renewal_overdue, inlined: this runs once per entry.
        now = time.monotonic() if now is None else now
        if now - self._renewed_s > self._overdue_after_s:
            self.renew()  # woken from a freeze: which claims are still ours?

    def _owned(self, entry_ids: list[str], idle_ms: int) -> list[str]:
        return claim_if_owner(self._script, self.settings, entry_ids, idle_ms)


def claim_if_owner(
    script: Script, settings: Settings, entry_ids: list[str], idle_ms: int
) -> list[str]:
    """Run CLAIM_IF_OWNER: renew (idle_ms 0) or release the entries still ours;
    returns those."""
    if not entry_ids:
        return []
    s = settings
    args: list[EncodableT] = [s.queue.group, s.consumer_name, idle_ms, *entry_ids]
    reply = script(keys=[s.queue.stream], args=args)
    if not isinstance(reply, list):
        raise TypeError(f"claim script answered {reply!r}")
    return [entry_id for entry_id in reply if isinstance(entry_id, str)]
