"""Worker: one consumer of the group. run() repeats poll_once(), which tests drive
directly: take stale entries or else new ones, run them one after another, and hand
each to its outcome (consumer.outcomes)."""

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from consumer.errors import GroupMissingError, InvalidMessageError
from consumer.heartbeat import Heartbeat
from consumer.message import Message, encode_result
from consumer.metrics import ConsumerMetrics
from consumer.outcomes import Outcomes
from consumer.ownership import Ownership
from consumer.reader import Reader
from consumer.settings import Settings
from consumer.tasks import bind_task
from consumer.trimming import trim_acknowledged
from pipeline_core.connection import Client

log = logging.getLogger(__name__)

# What the loop waits out: Redis unreachable, or the group gone with a Redis restart.
RECOVERABLE = (redis.ConnectionError, redis.TimeoutError, GroupMissingError)


class Worker:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        tasks: Mapping[str, Callable[..., Any]],
        metrics: ConsumerMetrics | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.tasks = tasks
        self.metrics = metrics or ConsumerMetrics(CollectorRegistry())
        self.metrics.prepare(tasks)
        self.stopping = stopping or threading.Event()  # set by SIGTERM: stop soon
        self.ownership = Ownership(client, settings)
        self.outcomes = Outcomes(client, settings, self.metrics, self.ownership, tasks)
        self.reader = Reader(client, settings, self.metrics)
        self.heartbeat = Heartbeat(self.ownership, settings.heartbeat_interval_s)
        # When the loop last moved on (monotonic): read by the liveness probe.
        self.progress_s = time.monotonic()
        self._next_trim_s = 0.0

    def ensure_group(self) -> None:
        """Create the group at the start of the stream, so entries written before any
        consumer existed are read too; an existing group is fine."""
        queue = self.settings.queue
        try:
            self.client.xgroup_create(queue.stream, queue.group, "0", mkstream=True)
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
            self.ownership.release([m.entry_id for m in stale[1:]])
        self.metrics.reclaimed.inc(len(stale[:1]))
        return stale[:1]

    def process(self, messages: list[Message]) -> None:
        """Run the batch in order; ack finished entries together, at least every
        ack_interval_ms. On stop, unstarted entries are released to other consumers."""
        self.ownership.hold(m.entry_id for m in messages)
        done: list[tuple[Message, str]] = []
        flushed_s = time.monotonic()
        try:
            for index, message in enumerate(messages):
                self.progress_s = time.monotonic()
                if self.stopping.is_set():
                    released = self.outcomes.release(messages[index:])
                    log.info("entries released", extra={"count": released})
                    break
                if not self.ownership.still_ours(message.entry_id):
                    continue  # another consumer took it over while we were frozen
                result = self.handle(message)
                if result is not None:
                    done.append((message, result))
                if time.monotonic() - flushed_s >= self.settings.ack_interval_ms / 1000:
                    self.outcomes.ack(done)
                    done, flushed_s = [], time.monotonic()
            self.outcomes.ack(done)
        finally:
            self.ownership.let_go(m.entry_id for m in messages)

    def handle(self, message: Message) -> str | None:
        """Run one entry's task; returns its JSON result, or None if it did not
        succeed (then its outcome is already decided)."""
        try:
            call = bind_task(self.tasks, message)
        except InvalidMessageError as error:
            self.outcomes.dead_letter(message, str(error))
            return None
        self.ownership.start(message.entry_id)
        started = time.perf_counter()
        try:
            value = call()
        except (
            Exception
        ) as error:  # the task's own failure, whatever it is: the one catch-all
            self.outcomes.failed(message, error)
            return None
        finally:
            self.metrics.processing(message.task, time.perf_counter() - started)
        try:
            return encode_result(value)
        except InvalidMessageError as error:
            self.outcomes.dead_letter(message, str(error))
            return None

    def trim_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_trim_s:
            self._next_trim_s = now + self.settings.trim_interval_ms / 1000
            trim_acknowledged(self.client, self.settings.queue.stream)

    def _exhausted(self, message: Message) -> bool:
        """Dead-letter, unrun, an entry whose deliveries all failed or crashed."""
        attempts = message.deliveries - 1  # the claim that returned it is no attempt
        if attempts < self.settings.max_deliveries:
            return False
        reason = (
            f"no success in {attempts} deliveries (the last crashed, hung or failed)"
        )
        self.outcomes.dead_letter(message, reason, deliveries=attempts)
        return True

    def _wait_for_redis(self, failures: int, error: Exception) -> None:
        if failures == 1:
            log.warning("redis unavailable, retrying", extra={"error": repr(error)})
        self.metrics.redis_reconnects.inc()
        cap = self.settings.reconnect_max_delay_s
        self.stopping.wait(min(cap, 0.05 * 2**failures) * random.uniform(0.5, 1.0))
