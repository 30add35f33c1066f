"""Worker: one consumer of the group. run() repeats poll_once(), which tests drive
directly."""

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from redis.typing import EncodableT, FieldT

from consumer.claims import Claims, ClaimScripts
from consumer.errors import GroupMissingError, InvalidMessageError
from consumer.heartbeat import Heartbeat
from consumer.message import Message, encode_result, results_key
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from consumer.settings import Settings
from consumer.tasks import bind_task
from consumer.trimming import trim_acknowledged

log = logging.getLogger(__name__)

# What the loop waits out: Redis unreachable, or the group gone with a Redis restart.
RECOVERABLE = (redis.ConnectionError, redis.TimeoutError, GroupMissingError)


def store_and_ack(
    client: redis.Redis, settings: Settings, done: list[tuple[Message, str]]
) -> None:
    """Results into their hourly hashes and XACK of their entries, in one MULTI/EXEC: a
    result exists exactly when its entry is acknowledged. Three commands a batch."""
    fields: dict[str, dict[FieldT, EncodableT]] = {}
    for message, result in done:
        key = results_key(settings.stream, message.entry_id)
        fields.setdefault(key, {})[message.entry_id] = result
    with client.pipeline(transaction=True) as pipe:
        for key, mapping in fields.items():
            pipe.hset(key, mapping=mapping)
            pipe.expire(
                key, settings.result_ttl_s
            )  # results live that long after the last
        pipe.xack(settings.stream, settings.group, *(m.entry_id for m, _ in done))
        pipe.execute()


class Worker:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        tasks: Mapping[str, Callable[..., Any]],
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.tasks = tasks
        self.metrics = metrics or ConsumerMetrics(CollectorRegistry())
        self.metrics.prepare(tasks)
        self.stopping = threading.Event()
        self.claims = Claims()
        self.scripts = ClaimScripts(client)
        self.reader = Reader(client, settings, self.metrics)
        self.heartbeat = Heartbeat(self.scripts, settings, self.claims)
        # When the loop last moved on (monotonic): read by the liveness probe.
        self.progress_s = time.monotonic()
        self._next_trim_s = 0.0

    def ensure_group(self) -> None:
        """Create the group at the start of the stream, so entries written before any
        consumer existed are read too; an existing group is fine."""
        try:
            self.client.xgroup_create(
                self.settings.stream, self.settings.group, "0", mkstream=True
            )
        except redis.ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise

    def run(self) -> None:
        """Poll until stopping is set; wait out Redis outages with jittered backoff."""
        failures, group_ready = 0, False
        with self.heartbeat:
            while not self.stopping.is_set():
                self.progress_s = time.monotonic()
                try:
                    if not group_ready:
                        self.ensure_group()
                        group_ready = True
                    self.poll_once()
                except RECOVERABLE as error:
                    failures, group_ready = failures + 1, False
                    self._wait_for_redis(failures, error)
                    continue
                if failures:
                    log.info("redis available again", extra={"failures": failures})
                    failures = 0

    def poll_once(self) -> int:
        """Take stale entries or else new ones, run them, ack them; returns how many."""
        try:
            messages = self.claim_stale() or self.reader.read_new()
        except redis.ResponseError as error:
            if str(error).startswith("NOGROUP"):
                raise GroupMissingError(str(error)) from error
            raise
        self.process(messages)
        self.trim_when_due()
        return len(messages)

    def claim_stale(self) -> list[Message]:
        """One stale entry, now ours (dead-lettered instead if out of deliveries).
        XAUTOCLAIM takes up to batch_size so each call scans the pending list widely;
        all but the first go straight back, uncounted. So a retried entry runs alone,
        and one that crashes its worker cannot use up its batch-mates' deliveries."""
        stale = [m for m in self.reader.claim_stale() if not self._exhausted(m)]
        if len(stale) > 1:
            self.reader.rewind(stale[1].entry_id)
            self._hand_back([m.entry_id for m in stale[1:]])
        self.metrics.reclaimed.inc(len(stale[:1]))
        return stale[:1]

    def process(self, messages: list[Message]) -> None:
        """Run the batch in order; ack finished entries together, at least every
        ack_interval_ms. On stop, unstarted entries are released to other consumers."""
        self.claims.hold(m.entry_id for m in messages)
        done: list[tuple[Message, str]] = []
        flushed_s = time.monotonic()
        try:
            for index, message in enumerate(messages):
                self.progress_s = time.monotonic()
                if self.stopping.is_set():
                    self.release(messages[index:])
                    break
                if self.claims.renewal_overdue(2 * self.settings.heartbeat_interval_s):
                    self.heartbeat.beat()  # woken from a freeze: which claims are ours?
                if self.claims.is_lost(message.entry_id):
                    continue  # another consumer took it over while we were frozen
                result = self.handle(message)
                if result is not None:
                    done.append((message, result))
                if time.monotonic() - flushed_s >= self.settings.ack_interval_ms / 1000:
                    done, flushed_s = self.ack(done), time.monotonic()
            self.ack(done)
        finally:
            self.claims.drop(m.entry_id for m in messages)

    def handle(self, message: Message) -> str | None:
        """Run one entry's task; returns its JSON result, or None if it failed."""
        task = message.task if message.task in self.tasks else "unknown"
        try:
            call = bind_task(self.tasks, message)
        except InvalidMessageError as error:
            self.dead_letter(message, str(error))
            return None
        self.claims.start(message.entry_id)
        started = time.perf_counter()
        try:
            value = call()
        except (
            Exception
        ) as error:  # the task's own failure, whatever it is: the one catch-all
            self._failed(message, error)
            return None
        finally:
            self.metrics.processing(task, time.perf_counter() - started)
        try:
            return encode_result(value)
        except InvalidMessageError as error:
            self.dead_letter(message, str(error))
            return None

    def ack(self, done: list[tuple[Message, str]]) -> list[tuple[Message, str]]:
        """Store the results and XACK their entries in one MULTI/EXEC: a result exists
        exactly when its entry is acknowledged. Returns an empty list for the next lot.
        """
        if not done:
            return []
        s = self.settings
        if self.claims.renewal_overdue(2 * s.heartbeat_interval_s):
            self.heartbeat.beat()  # frozen meanwhile: which of these were taken over?
        late = [m.entry_id for m, _ in done if self.claims.is_lost(m.entry_id)]
        if late:
            # Harmless: the work is done; the new owner's own ack will find nothing.
            self.metrics.late_acks.inc(len(late))
            log.warning("late acks of entries taken over", extra={"entry_ids": late})
        store_and_ack(self.client, s, done)
        now = time.time()
        for task, acked in Counter(message.task for message, _ in done).items():
            self.metrics.count(task, "acked", acked)
        for message, _ in done:
            self.metrics.end_to_end(message.task, now - message.enqueued_s)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "messages acked", extra={"entry_ids": [m.entry_id for m, _ in done]}
            )
        return []

    def dead_letter(
        self, message: Message, error: str, deliveries: int | None = None
    ) -> None:
        """Move an entry to the dead-letter stream with the reason (ack + XADD,
        atomically)."""
        s = self.settings
        count = message.deliveries if deliveries is None else deliveries
        fields = {
            **message.fields,
            "source_id": message.entry_id,
            "error": error[:2000],
            "deliveries": str(count),
            "consumer": s.consumer_name,
        }
        streams = (s.stream, s.dead_letter_stream)
        if self.scripts.dead_letter(streams, s.group, message.entry_id, fields):
            task = message.task if message.task in self.tasks else "unknown"
            self.metrics.count(task, "dead_lettered")
            log.error(
                "message dead-lettered", extra={"entry_id": message.entry_id, **fields}
            )

    def release(self, messages: list[Message]) -> None:
        """Hand unstarted entries back: claimable by any consumer at once, their
        delivery uncounted."""
        released = self._hand_back([m.entry_id for m in messages])
        self.metrics.released.inc(released)
        log.info("entries released", extra={"count": released})

    def trim_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_trim_s:
            self._next_trim_s = now + self.settings.trim_interval_ms / 1000
            trim_acknowledged(self.client, self.settings.stream)

    def _hand_back(self, entry_ids: list[str]) -> int:
        """Make entries claimable by anyone now, their last delivery uncounted."""
        s = self.settings
        with self.claims.renewing:
            self.claims.drop(entry_ids)
            return len(
                self.scripts.release(
                    s.stream, s.group, s.consumer_name, entry_ids, s.claim_idle_ms
                )
            )

    def _exhausted(self, message: Message) -> bool:
        """Dead-letter, unrun, an entry whose deliveries all failed or crashed."""
        attempts = (
            message.deliveries - 1
        )  # the claim that just returned it is not an attempt
        if attempts < self.settings.max_deliveries:
            return False
        reason = (
            f"no success in {attempts} deliveries (the last crashed, hung or failed)"
        )
        self.dead_letter(message, reason, deliveries=attempts)
        return True

    def _failed(self, message: Message, error: Exception) -> None:
        task, facts = (
            message.task,
            {"entry_id": message.entry_id, "deliveries": message.deliveries},
        )
        if message.deliveries >= self.settings.max_deliveries:
            self.dead_letter(message, f"{type(error).__name__}: {error}")
            return
        # Left pending, unrenewed: claim_stale (here or elsewhere) returns it after
        # claim_idle_ms.
        self.claims.drop([message.entry_id])
        self.metrics.count(task, "failed")
        log.warning("task failed, will be retried", exc_info=error, extra=facts)

    def _wait_for_redis(self, failures: int, error: Exception) -> None:
        if failures == 1:
            log.warning("redis unavailable, retrying", extra={"error": repr(error)})
        self.metrics.redis_reconnects.inc()
        cap = self.settings.reconnect_max_delay_s
        self.stopping.wait(min(cap, 0.05 * 2**failures) * random.uniform(0.5, 1.0))
