"""The entries this consumer holds, and the Lua scripts that act on them only while it
owns them.

The worker loop and the heartbeat thread share one Claims record, guarded by a lock."""

import threading
import time
from collections.abc import Iterable

import redis

# Why Lua: "renew (or release) this entry only if this consumer still owns it" must read
# the pending list and XCLAIM in one atomic step, and a MULTI cannot branch on a read. A
# plain XCLAIM would take an entry back from a consumer that reclaimed it while we were
# paused (SIGSTOP, long GC, network partition). ARGV: group, consumer, idle_ms, entry
# IDs... With idle_ms 0 the claim is renewed (idle time reset, delivery count untouched,
# thanks to JUSTID). Otherwise the entry is released: its idle time set to idle_ms so
# any consumer's XAUTOCLAIM takes it at once, and its delivery count lowered by one,
# since this delivery never ran.
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

# Why Lua: the dead letter must be written exactly once. XACK answers 1 only to the
# caller that removes the entry from the pending list; a MULTI cannot make the XADD
# depend on that answer, so a retried or late MULTI (after another consumer finished the
# entry) would add a second dead letter. KEYS: stream, dead-letter stream. ARGV: group,
# entry ID, fields...
DEAD_LETTER = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
end
return false
"""


class Claims:
    """Entry IDs this consumer holds: waiting in the batch, or running (since when)."""

    def __init__(self) -> None:
        # Held for a whole renewal round trip. A release takes it too, so a renewal
        # that read the held IDs just before cannot undo the release.
        self.renewing = threading.Lock()
        self._lock = threading.Lock()
        self._started: dict[str, float | None] = {}
        self._lost: set[str] = set()
        self._renewed_s = time.monotonic()

    def hold(self, entry_ids: Iterable[str]) -> None:
        """Record a batch just read or claimed (so its claims are fresh)."""
        with self._lock:
            self._started.update(dict.fromkeys(entry_ids))
            self._renewed_s = time.monotonic()

    def start(self, entry_id: str) -> None:
        with self._lock:
            self._started[entry_id] = time.monotonic()

    def drop(self, entry_ids: Iterable[str]) -> None:
        with self._lock:
            for entry_id in entry_ids:
                self._started.pop(entry_id, None)
                self._lost.discard(entry_id)

    def renewable(self, task_timeout_s: float) -> list[str]:
        """Held IDs, minus a task running past task_timeout_s: its claim is left to
        lapse, so a hung task's entry goes to another consumer after claim_idle_ms."""
        deadline = time.monotonic() - task_timeout_s
        with self._lock:
            return [
                i
                for i, start in self._started.items()
                if start is None or start > deadline
            ]

    def renewed(self, at_s: float) -> None:
        """Every claim held at monotonic time at_s has been renewed (or found lost)."""
        with self._lock:
            self._renewed_s = max(self._renewed_s, at_s)

    def renewal_overdue(self, limit_s: float) -> bool:
        """True when the claims went unrenewed for limit_s: the process was frozen or
        the heartbeat stalled, and another consumer may have taken some over."""
        return time.monotonic() - self._renewed_s > limit_s  # reading a float is atomic

    def lose(self, entry_ids: Iterable[str]) -> None:
        """Mark IDs another consumer has taken over; the worker skips them if not
        started."""
        with self._lock:
            self._lost.update(i for i in entry_ids if i in self._started)

    def is_lost(self, entry_id: str) -> bool:
        if not self._lost:
            return False  # the usual case, checked per entry: no lock needed to see it
        with self._lock:
            return entry_id in self._lost


class ClaimScripts:
    """The Lua scripts above, registered on one client (EVALSHA with a fallback to
    EVAL)."""

    def __init__(self, client: redis.Redis) -> None:
        self._claim_if_owner = client.register_script(CLAIM_IF_OWNER)
        self._dead_letter = client.register_script(DEAD_LETTER)

    def renew(
        self, stream: str, group: str, consumer: str, entry_ids: list[str]
    ) -> list[str]:
        """Reset the idle time of the entries still owned; returns those."""
        return self._owned(stream, group, consumer, 0, entry_ids)

    def release(
        self, stream: str, group: str, consumer: str, entry_ids: list[str], idle_ms: int
    ) -> list[str]:
        """Make owned entries claimable by any consumer now; returns those released."""
        return self._owned(stream, group, consumer, idle_ms, entry_ids)

    def dead_letter(
        self,
        streams: tuple[str, str],
        group: str,
        entry_id: str,
        fields: dict[str, str],
    ) -> bool:
        """Ack the entry and add its dead letter, atomically; False if it was already
        acked."""
        flat = [item for pair in fields.items() for item in pair]
        reply = self._dead_letter(keys=list(streams), args=[group, entry_id, *flat])
        return reply is not None

    def _owned(
        self, stream: str, group: str, consumer: str, idle_ms: int, entry_ids: list[str]
    ) -> list[str]:
        if not entry_ids:
            return []
        reply = self._claim_if_owner(
            keys=[stream], args=[group, consumer, idle_ms, *entry_ids]
        )
        if not isinstance(reply, list):
            raise TypeError(f"claim script answered {reply!r}")
        return [entry_id for entry_id in reply if isinstance(entry_id, str)]
