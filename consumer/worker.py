"""Worker: one consumer of the group. run() repeats poll_once(), which tests drive
directly: take stale entries or else new ones, run them one after another, and hand
each to its outcome (consumer.outcomes)."""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.clock import Clock
from consumer.errors import InvalidMessageError
from consumer.heartbeat import Heartbeat
from consumer.in_flight import TAKE_EVERY
from consumer.keeper import Beacon
from consumer.message import Message, encode_result
from consumer.metrics import ConsumerMetrics
from consumer.outcomes import Outcomes
from consumer.ownership import Ownership
from consumer.reader import Reader
from consumer.recovery import Recovery, ensure_group
from consumer.settings import Settings
from consumer.tasks import bind_task, options_of
from consumer.timeouts import TaskTimer
from consumer.trimming import trim_acknowledged
from pipeline_core.connection import Client
from pipeline_core.replies import FAILURES

log = logging.getLogger(__name__)

# Forks this process has been through, counted in the child (os.register_at_fork): a
# worker made before a fork compares its count to tell, per task, without a getpid()
# system call. A hook registered once per process, by this module's first import.
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


class Worker:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        tasks: Mapping[str, Callable[..., Any]],
        metrics: ConsumerMetrics | None = None,
        stopping: threading.Event | None = None,
        beacon: Beacon | None = None,
        partition: int | None = None,
    ) -> None:
        """`partition`: which of PARTITIONS `settings.queue` is (None: the only one);
        only partition 0's clock ticks the periodic tasks."""
        self.client = client
        self.settings = settings
        self.tasks = tasks
        self.metrics = metrics or ConsumerMetrics(CollectorRegistry())
        self.metrics.prepare(tasks)
        self.stopping = stopping or threading.Event()  # set by SIGTERM: stop soon
        label = "" if partition is None else f"p{partition}-"
        self.ownership = Ownership(client, settings, beacon, label)
        self.outcomes = Outcomes(client, settings, self.metrics, self.ownership, tasks)
        self.reader = Reader(client, settings, self.metrics)
        self.heartbeat = Heartbeat(
            self.ownership, settings.heartbeat_interval_s, self.stopping
        )
        ticking = tasks if not partition else {}
        self.clock = Clock(client, settings, ticking)  # delayed tasks, periodic ticks
        self.timer = TaskTimer()  # each task's hard timeout
        self._timeouts: dict[Callable[..., Any], float] = {}
        # When the loop last moved on (monotonic): read by the liveness probe.
        self.progress_s = time.monotonic()
        self._next_trim_s = 0.0
        self._forks = _forks[0]
        self.recovery = Recovery(client, settings, self.metrics)  # Redis failing

    def ensure_group(self, missing: bool = False) -> None:
        """Create the group unless it exists (consumer.recovery.ensure_group)."""
        ensure_group(self.client, self.settings, self.metrics, missing)

    def run(self) -> None:
        """Poll until stopping is set (consumer.rotation takes turns over several
        partitions' workers the same way)."""
        with self.running():
            while not self.stopping.is_set():
                self.step(self.settings.block_ms)
                self.stopping.wait(max(0.0, self.recovery.resume_s - time.monotonic()))

    def running(self) -> contextlib.ExitStack:
        """The heartbeat and clock threads, for the duration of the block."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.heartbeat.running())
        stack.enter_context(self.clock.running())
        stack.callback(self.release_read_ahead)
        return stack

    def step(self, block_ms: int) -> int:
        """One poll; how many entries it took. A Redis failure is said once and
        retried after a jittered backoff (consumer.recovery: recovery.resume_s)."""
        self.progress_s = time.monotonic()
        try:
            self.recovery.ready()
            taken = self.poll_once(block_ms)
        except FAILURES as error:
            self._drop_in_flight()
            self.recovery.failed(error)
            return 0
        self.recovery.succeeded()
        return taken

    def poll_once(self, block_ms: int | None = None) -> int:
        """Take stale entries or else new ones (waiting up to block_ms, default
        BLOCK_MS), run them, ack them; returns how many."""
        messages = self.claim_stale()
        read_s = None
        if not messages and self.reader.ahead.outstanding:
            self.reader.take_read_ahead()  # wanted now: if it is empty, we read
        if not self.reader.in_hand:
            self.outcomes.settle()  # before a read that may wait
        if not messages:
            messages = self.skip_cancelled(self.reader.read_new(block_ms))
            read_s = self.reader.read_s
            if messages and not self.stopping.is_set():
                self.reader.read_ahead()  # tiny tasks: Redis reads while we work
        self.process(messages, read_s)
        self.trim_when_due()
        return len(messages)

    def claim_stale(self) -> list[Message]:
        """One stale entry, now ours (dead-lettered instead if out of deliveries).
        XAUTOCLAIM takes up to batch_size so each call scans the pending list widely;
        all but the first go straight back, uncounted. So a retried entry runs alone,
        and one that crashes its worker cannot use up its batch-mates' deliveries."""
        claimed = self.skip_cancelled(self.reader.claim_stale())
        stale = [m for m in claimed if not self._exhausted(m)]
        if len(stale) > 1:
            self.reader.rewind(stale[1].entry_id)
            self.ownership.release([m.entry_id for m in stale[1:]])
        self.metrics.reclaimed.inc(len(stale[:1]))
        return stale[:1]

    def skip_cancelled(self, messages: list[Message]) -> list[Message]:
        """Acknowledge, unrun, the entries whose task was cancelled; the rest."""
        cancelled = self.reader.cancelled(messages)
        if not cancelled:
            return messages
        self.outcomes.unrun(cancelled, "cancelled")
        skipped = {m.entry_id for m in cancelled}
        return [m for m in messages if m.entry_id not in skipped]

    def process(self, messages: list[Message], read_s: float | None = None) -> None:
        """Run the batch in order; ack finished entries together, at least every
        ack_interval_ms. On stop, unstarted entries are released to other consumers.
        `read_s`: when the read that returned them was sent (default: just now)."""
        self.ownership.hold((m.entry_id for m in messages), read_s)
        try:
            with self.timer.armed():
                self._run(messages)
        finally:
            self.ownership.let_go([m.entry_id for m in messages])

    def _run(self, messages: list[Message]) -> None:
        done: list[tuple[Message, str]] = []
        ack_every_s = self.settings.ack_interval_ms / 1000
        flushed_s = time.monotonic()
        look_at = len(messages) // 2  # from halfway: what Redis has answered
        for index, message in enumerate(messages):
            # One clock reading per entry serves its liveness mark, the freeze check
            # and its task's start (a few µs apart: a no-op's whole cost is ~10 µs).
            self.progress_s = now = time.monotonic()
            if self.stopping.is_set():
                self.outcomes.release(messages[index:])
                log.info("entries released", extra={"count": len(messages) - index})
                break
            if index == look_at:
                look_at += TAKE_EVERY
                self._hold_read_ahead(arrived=True)
            if not self.ownership.still_ours(message.entry_id, now):
                continue  # another consumer took it over while we were frozen
            if message.expired():
                self.outcomes.unrun([message], "expired")
                continue
            result = self.handle(message, now)
            if result is not None:
                done.append((message, result))
            if time.monotonic() - flushed_s >= ack_every_s:
                self.outcomes.ack(done)
                done, flushed_s = [], time.monotonic()
                self._hold_read_ahead()
        # The next batch in hand (read ahead): this ack's reply is read during it.
        ahead = self.reader.in_hand and not self.stopping.is_set()
        self.outcomes.ack(done, ahead)

    def _hold_read_ahead(self, arrived: bool = False) -> None:
        """From halfway through the batch (if Redis has answered: `arrived`), and at
        each ack while it runs long (waiting if need be): the last batch's ack sent
        ahead is settled, and the entries read ahead are taken in hand, so the
        heartbeat renews their claims, and a stop hands them back at once
        (consumer.in_flight)."""
        self.outcomes.settle(arrived)
        in_flight = self.reader.ahead
        if in_flight.outstanding and (not arrived or in_flight.arrived()):
            read_s = in_flight.sent_s
            ahead = self.reader.take_read_ahead()
            self.ownership.hold((m.entry_id for m in ahead), read_s)

    def release_read_ahead(self) -> None:
        """On stop: the ack in flight is settled; the entries read ahead go back to
        the group, unrun."""
        try:
            self.outcomes.settle()
            ahead = self.reader.take_read_ahead()
            if ahead:
                self.outcomes.release(ahead)
        except FAILURES:
            self._drop_in_flight()

    def _drop_in_flight(self) -> None:
        """After a failure: the ack sent ahead and the read ahead are forgotten
        (consumer.in_flight: their entries are reclaimed after CLAIM_IDLE_MS)."""
        self.outcomes.drop()
        self.ownership.let_go([m.entry_id for m in self.reader.drop_read_ahead()])

    def handle(self, message: Message, started: float) -> str | None:
        """Run one entry's task (its start: monotonic `started`); returns its JSON
        result, or None if it did not succeed (then its outcome is already decided)."""
        try:
            call = bind_task(self.tasks, message)
        except InvalidMessageError as error:
            self.outcomes.dead_letter(message, str(error))
            return None
        timeout_s = self._timeout_s(call.func)
        self.ownership.start(message.entry_id, timeout_s, started)
        try:
            self.timer.start(timeout_s, started)
            try:
                value = call()
            finally:
                self.timer.stop()
        # The task's own failure, whatever it is: the codebase's one catch-all.
        except Exception as error:
            self._never_in_a_fork()
            self.outcomes.failed(message, error)
            return None
        finally:
            self.metrics.processing(message.task, time.monotonic() - started)
        self._never_in_a_fork()
        try:
            return encode_result(value, self.settings.result_max_bytes)
        except InvalidMessageError as error:
            self.outcomes.dead_letter(message, str(error))
            return None

    def trim_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_trim_s:
            self._next_trim_s = now + self.settings.trim_interval_ms / 1000
            trim_acknowledged(self.client, self.settings.queue.stream)

    def _timeout_s(self, function: Callable[..., Any]) -> float:
        """A task's timeout: its own or TASK_TIMEOUT_S (looked up once a function)."""
        timeout_s = self._timeouts.get(function)
        if timeout_s is None:
            timeout_s = options_of(function).timeout(self.settings)
            self._timeouts[function] = timeout_s
        return timeout_s

    def _never_in_a_fork(self) -> None:
        """A task that forked: its child came back here, into a copy of this worker
        that must not run the loop (it would be a phantom consumer of the group)."""
        if _forks[0] != self._forks:
            os._exit(0)

    def _exhausted(self, message: Message) -> bool:
        """Dead-letter, unrun, an entry whose attempts all failed or crashed."""
        attempts = message.attempt + message.deliveries - 1  # this claim is none
        function = self.tasks.get(message.task)
        allowed = options_of(function).attempts(self.settings) if function else 1
        if attempts < max(allowed, 1):
            return False
        reason = f"no success in {attempts} attempts (the last crashed, hung or failed)"
        self.outcomes.dead_letter(message, reason, deliveries=attempts)
        return True
