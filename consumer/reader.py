"""Reader: fetches this consumer's next entries, stale ones (XAUTOCLAIM) or new ones
(XREADGROUP), as Messages with their delivery counts."""

import logging
import time

from consumer.batching import CLAIM_COUNT, ReadSize
from consumer.in_flight import READ_AHEAD_FROM, InFlight
from consumer.message import Message, read_entries, to_messages
from consumer.metrics import ConsumerMetrics
from consumer.settings import Settings
from pipeline_core.connection import Client
from pipeline_core.task_state import CANCELS
from pipeline_core.wire import parse_entry_id

log = logging.getLogger(__name__)


class Reader:
    def __init__(
        self, client: Client, settings: Settings, metrics: ConsumerMetrics
    ) -> None:
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.read_size = ReadSize(settings.batch_size)
        self._cursor = "0-0"
        self._next_scan_s = 0.0
        # The newest entry a read of new entries just gave us (None after a read that
        # found none), and where the scan in progress may stop (see claim_stale).
        self._newest: str | None = None  # its read was sent at read_s
        self._scan_until: str | None = None
        # Whether cancel requests were outstanding at the last read: asked in the same
        # round trip (ZCARD), so a batch costs one more lookup only while there are.
        self.cancels_outstanding = False
        self._cancels = settings.queue.key(CANCELS)
        self.ahead = InFlight(client)
        self._count = 1  # the COUNT of the last read: a read ahead asks as many
        # Read ahead and taken, not yet run (Worker takes them halfway through a batch).
        self._ready: list[Message] = []
        # When the read that returned the last batch was sent (monotonic): its claims
        # are at least that fresh.
        self.read_s = 0.0

    def read_new(self, block_ms: int | None = None) -> list[Message]:
        """Never-delivered entries, as many as read_size allows: those read ahead if
        any, else read now, waiting up to block_ms (default BLOCK_MS; 0: not at all,
        unlike Redis's BLOCK 0)."""
        count = self.read_size.count()
        self.read_s = self.ahead.sent_s
        messages = self.take_read_ahead()
        self._ready = []
        if not messages:
            self.read_s = time.monotonic()
            messages = self._read(count, block_ms)
        self._count = count
        self.read_size.returned(len(messages))
        self._newest = messages[-1].entry_id if messages else None
        return messages

    def read_ahead(self) -> None:
        """Send the next read now, before the batch just read runs, if its tasks are
        tiny (consumer.in_flight)."""
        if (
            self._count < READ_AHEAD_FROM
            or self.settings.batch_size is not None
            or not self.ahead.possible
            or self.ahead.outstanding
            or self._ready
        ):
            return
        q = self.settings.queue
        group, consumer = q.group, self.settings.consumer_name
        self.ahead.send(
            ("XREADGROUP", "GROUP", group, consumer, "COUNT", self._count,
             "STREAMS", q.stream, ">"),
            ("ZCARD", self._cancels),
        )  # fmt: skip

    @property
    def in_hand(self) -> bool:
        """Whether a read ahead is outstanding or its entries are waiting to run."""
        return bool(self._ready) or self.ahead.outstanding

    def take_read_ahead(self) -> list[Message]:
        """The entries read ahead (collected now if still outstanding), once."""
        if self.ahead.outstanding:
            reply, cancels = self.ahead.collect()
            for answer in (reply, cancels):
                if isinstance(answer, Exception):
                    raise answer  # e.g. NOGROUP: the group was deleted meanwhile
            self.cancels_outstanding = bool(cancels)
            self._ready = to_messages(read_entries(reply), deliveries=1)
        return self._ready

    def drop_read_ahead(self) -> list[Message]:
        """After a failure: the read ahead is forgotten (see InFlight.drop); the
        entries it had returned, if taken already, to be let go."""
        self.ahead.drop()
        dropped, self._ready = self._ready, []
        return dropped

    def _read(self, count: int, block_ms: int | None) -> list[Message]:
        s = self.settings
        q = s.queue
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xreadgroup(
                q.group,
                s.consumer_name,
                {q.stream: ">"},
                count,
                s.block_ms if block_ms is None else (block_ms or None),
            )
            pipe.zcard(self._cancels)
            reply, cancels = pipe.execute()
        self.cancels_outstanding = bool(cancels)
        return to_messages(read_entries(reply), deliveries=1)

    def claim_stale(self) -> list[Message]:
        """Entries idle past claim_idle_ms (a crashed, frozen or failed attempt), now
        ours. The XAUTOCLAIM cursor carries over between calls; once a scan has wrapped
        around, the next waits claim_interval_ms.

        A scan ends early past the newest entry our last read returned, if that read
        was sent less than claim_idle_ms before the scan began. Redis delivers new
        entries in ID order, so every entry after that one was delivered after that
        read, and was not yet idle for claim_idle_ms; the next scan, claim_interval_ms
        later, reaches it. Without that end, while
        consumers drain a backlog faster than a call scans (10 x COUNT pending entries),
        the scan chases the pending list's growing end: an XAUTOCLAIM per batch, and
        never a new scan from the start, so a crashed consumer's entries below the
        cursor would wait for the backlog to end."""
        now = time.monotonic()
        if self._cursor == "0-0":
            if now < self._next_scan_s:
                return []
            recent = now - self.read_s < self.settings.claim_idle_ms / 1000
            self._scan_until = self._newest if recent else None
        s = self.settings
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xautoclaim(
                s.queue.stream,
                s.queue.group,
                s.consumer_name,
                s.claim_idle_ms,
                self._cursor,
                s.batch_size or CLAIM_COUNT,
            )
            pipe.zcard(self._cancels)
            (cursor, entries, deleted), cancels = pipe.execute()
        self.cancels_outstanding = bool(cancels)
        if self._scan_until and parse_entry_id(cursor) > parse_entry_id(
            self._scan_until
        ):
            cursor = "0-0"  # the rest is newer than the scan's end
        self._cursor = cursor
        if cursor == "0-0":
            self._next_scan_s = now + s.claim_interval_ms / 1000
        if deleted:
            # Redis 7 drops pending IDs whose entry is gone (trimmed or XDELed); their
            # payload is lost to us, so say so loudly.
            log.warning("pending entries were deleted", extra={"entry_ids": deleted})
            self.metrics.deleted_pending.inc(len(deleted))
        return to_messages(entries, self._deliveries([e[0] for e in entries]))

    def cancelled(self, messages: list[Message]) -> list[Message]:
        """Those of `messages` whose task was cancelled before it started (one ZMSCORE,
        only while cancel requests are outstanding)."""
        if not self.cancels_outstanding or not messages:
            return []
        scores = self.client.zmscore(self._cancels, [m.task_id for m in messages])
        return [
            m for m, score in zip(messages, scores, strict=True) if score is not None
        ]

    def rewind(self, entry_id: str) -> None:
        """Start the next XAUTOCLAIM at entry_id (entries handed straight back)."""
        self._cursor = entry_id

    def _deliveries(self, entry_ids: list[str]) -> dict[str, int]:
        """Delivery counts of claimed entries: an XPENDING per ID, in one round trip."""
        s = self.settings
        with self.client.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(
                    s.queue.stream,
                    s.queue.group,
                    entry_id,
                    entry_id,
                    1,
                    s.consumer_name,
                )
            rows = [row for reply in pipe.execute() for row in reply]
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}
