"""The consumer's Prometheus metrics, created on a registry the caller passes in.

Label values come from closed sets: outcomes below, and task names from the task table
(entries naming an unknown task are counted under "unknown").
"""

import itertools
import operator
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from consumer.histograms import TaskHistograms
from consumer.message import Message
from pipeline_core.replies import REASONS
from pipeline_core.wire import entry_ms

PROCESSING_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                        0.5, 1, 2.5, 5, 10, 30, 60, 300)  # fmt: skip
LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                     60, 300)  # fmt: skip
TASK = operator.attrgetter("task")  # a batch's entries grouped by task, in C
# failed: the task raised and the entry waits for a retry; dead_lettered: gave up.
OUTCOMES = ("acked", "failed", "retried", "dead_lettered", "cancelled", "expired")


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "consumer_messages",
            "Entries handled, by task and outcome: acked, failed (an attempt raised or "
            "timed out), retried (re-queued after its backoff), dead_lettered, "
            "cancelled and expired (acknowledged unrun).",
            ["task", "outcome"],
            registry=registry,
        )
        self.processing_seconds = TaskHistograms(
            "consumer_processing_seconds",
            "Time a task ran, by task.",
            PROCESSING_BUCKETS_S,
        )
        self.end_to_end_seconds = TaskHistograms(
            "consumer_end_to_end_seconds",
            "Time from enqueue (the entry ID) to acknowledgement, by task.",
            LATENCY_BUCKETS_S,
        )
        registry.register(self.processing_seconds)
        # A task's run time (task, seconds): once per entry, so no call in between.
        self.processing = self.processing_seconds.observe
        registry.register(self.end_to_end_seconds)
        self.reclaimed = Counter(
            "consumer_reclaimed_entries",
            "Entries this consumer took over from idle claims (XAUTOCLAIM).",
            registry=registry,
        )
        self.released = Counter(
            "consumer_released_entries",
            "Unstarted entries handed back at shutdown for other consumers.",
            registry=registry,
        )
        self.late_acks = Counter(
            "consumer_late_acks",
            "Entries acknowledged after another consumer had taken them over (this "
            "consumer was frozen); the entry may run twice, nothing is lost.",
            registry=registry,
        )
        self.deleted_pending = Counter(
            "consumer_deleted_pending_entries",
            "Pending entries found deleted from the stream (trimmed or XDELed).",
            registry=registry,
        )
        self.redis_errors = Counter(
            "consumer_redis_errors",
            "Redis failures the worker loop backed off from, by reason (a closed set: "
            "connection, timeout, oom, misconf, readonly, loading, noperm, nogroup, "
            "unblocked, cluster, other).",
            ["reason"],
            registry=registry,
        )
        self.group_recreated = Counter(
            "consumer_group_recreated",
            "Times the consumer group was found missing (destroyed, or its stream "
            "deleted) and created again: entries may run again or be lost.",
            registry=registry,
        )
        self.results_dropped = Counter(
            "consumer_results_dropped",
            "Finished entries acknowledged without storing their result, because Redis "
            "was out of memory (draining is what frees it).",
            registry=registry,
        )
        self.redis_reconnects = Counter(
            "consumer_redis_reconnects",
            "Attempts to reach Redis again after the worker loop lost it.",
            registry=registry,
        )

        # labels() takes a lock and a lookup: the hot path uses cached children.
        self._counts: dict[tuple[str, str], Any] = {}

    def prepare(self, tasks: Iterable[str]) -> None:
        """Create every task's series at zero, so rates and panels start at once."""
        for reason in REASONS:
            self.redis_errors.labels(reason)
        for task in [*tasks, "unknown"]:
            for outcome in OUTCOMES:
                self._counts[task, outcome] = self.messages.labels(task, outcome)
            self.processing_seconds.prepare([task])
            self.end_to_end_seconds.prepare([task])

    def count(self, task: str, outcome: str, entries: int = 1) -> None:
        child = self._counts.get((task, outcome))
        if child is None:
            child = self._counts[task, outcome] = self.messages.labels(task, outcome)
        child.inc(entries)

    def acked(self, messages: Iterable[Message], now_s: float) -> None:
        """Entries just acknowledged (at Unix time now_s): counted, and their time
        from enqueue observed, per task, a batch at a time."""
        for task, same in itertools.groupby(sorted(messages, key=TASK), key=TASK):
            seconds_each = [now_s - entry_ms(m.entry_id) / 1000 for m in same]
            self.count(task, "acked", len(seconds_each))
            self.end_to_end_seconds.observe_many(task, seconds_each)
