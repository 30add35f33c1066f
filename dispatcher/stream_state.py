"""The queue's state (pipeline_core.group_state), read at scrape time and exported as
gauges.

Only the dispatcher exports it, so sums over several consumer pods do not multiply it.
A scrape never fails because of Redis: the reads use a client with a short timeout, and
`pipeline_stream_state_up` says whether they worked. The names start with `pipeline_`,
not `dispatcher_`: they describe the shared stream, whichever process reads it.
"""

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.group_state import GroupState, read_group_state
from pipeline_core.keys import Queue
from pipeline_core.memory import Memory, read_memory
from pipeline_core.replies import FAILURES

# Per-consumer pending is exported for this many consumers at most (the busiest).
CONSUMER_SERIES_LIMIT = 50
# A consumer that talked to Redis within this window counts as active.
ACTIVE_WITHIN_S = 60.0


class StreamStateCollector(Collector):  # prometheus_client's extension point
    """A prometheus_client collector: `collect` runs at every scrape."""

    def __init__(
        self, client: Client, queue: Queue, budget: tuple[int, float] = (0, 0.8)
    ) -> None:
        self.client, self.queue, self.budget = client, queue, budget

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_families(None, 0.0))  # no Redis call when the registry asks

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        try:
            states = [
                read_group_state(self.client, part)
                for part in partitions.parts(self.queue)
            ]
            memory = read_memory(self.client, self.queue)
        except FAILURES:
            return iter(_families(None, time.perf_counter() - started))
        took_s = time.perf_counter() - started
        return iter(_families(states, took_s) + _memory_families(memory, self.budget))


def _memory_families(
    memory: Memory, budget: tuple[int, float]
) -> list[GaugeMetricFamily]:
    return [
        GaugeMetricFamily(
            "pipeline_redis_memory_used_bytes",
            "Memory Redis uses (INFO used_memory of the node holding the queue).",
            value=memory.used_bytes,
        ),
        GaugeMetricFamily(
            "pipeline_redis_maxmemory_bytes",
            "Redis's maxmemory (0: none set).",
            value=memory.max_bytes,
        ),
        GaugeMetricFamily(
            "pipeline_memory_budget_bytes",
            "New work is refused (507) past this much Redis memory (0: no budget).",
            value=memory.budget_bytes(*budget),
        ),
    ]


def _families(
    states: list[GroupState] | None, took_s: float
) -> list[GaugeMetricFamily]:
    """With PARTITIONS > 1 each state gauge has a series per partition (label
    `partition`, 0 to P-1): sum() over it is the queue's total."""
    up = GaugeMetricFamily(
        "pipeline_stream_state_up", "1 if the last read of the stream state worked."
    )
    up.add_metric([], 0 if states is None else 1)
    took = GaugeMetricFamily(
        "pipeline_stream_state_read_seconds", "Time the last read of the state took."
    )
    took.add_metric([], took_s)
    if states is None:
        return [up, took]
    if len(states) == 1:
        return [up, took, *_state_families(states[0]), *_tamper_families(states[0])]
    each = [_state_families(state) + _tamper_families(state) for state in states]
    return [up, took, *_by_partition(each)]


def _by_partition(each: list[list[GaugeMetricFamily]]) -> list[GaugeMetricFamily]:
    """One family per name, its samples labelled with their partition."""
    merged: dict[str, GaugeMetricFamily] = {}
    for index, families in enumerate(each):
        for family in families:
            into = merged.setdefault(
                family.name, GaugeMetricFamily(family.name, family.documentation)
            )
            into.samples += [
                sample._replace(labels={"partition": str(index), **sample.labels})
                for sample in family.samples
            ]
    return list(merged.values())


def _tamper_families(state: GroupState) -> list[GaugeMetricFamily]:
    """What ACLs cannot refuse, detected (docs/security.md): work or dead letters
    deleted by someone else, and dead-letter IDs written by someone else."""
    return [
        GaugeMetricFamily(
            "pipeline_stream_unfinished_deleted",
            "Entries pending or never delivered that are gone from the stream (not by "
            "our trimming): XADD/XTRIM MAXLEN or XDEL by someone else.",
            value=state.unfinished_deleted,
        ),
        GaugeMetricFamily(
            "pipeline_dead_letters_deleted_elsewhere",
            "Dead letters gone that replay, purge and trimming by age did not delete "
            "(they count what they delete): XADD ... MAXLEN on the dead-letter stream.",
            value=state.dead_letters_deleted_elsewhere,
        ),
        GaugeMetricFamily(
            "pipeline_dead_letter_last_id_ahead_seconds",
            "How far the dead-letter stream's last ID is past Redis's clock: someone "
            "wrote IDs of their own there (at the largest, no dead letter fits).",
            value=state.dead_last_id_ahead_s,
        ),
    ]


def _state_families(state: GroupState) -> list[GaugeMetricFamily]:
    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    per_consumer = GaugeMetricFamily(
        "pipeline_consumer_pending",
        "Entries delivered to a consumer and not yet acknowledged (busiest 50).",
        labels=["consumer"],
    )
    busiest = sorted(state.consumers, key=lambda c: -c.pending)
    for consumer in busiest[:CONSUMER_SERIES_LIMIT]:
        per_consumer.add_metric([consumer.name], consumer.pending)
    return [
        gauge("pipeline_stream_length", "Entries on the stream (XLEN).", state.length),
        gauge("pipeline_group_lag", "Entries never delivered to the group.", state.lag),
        gauge(
            "pipeline_group_pending",
            "Entries delivered, not acknowledged.",
            state.pending,
        ),
        gauge(
            "pipeline_group_consumers",
            "Consumers in the group.",
            len(state.consumers),
        ),
        gauge(
            "pipeline_group_consumers_active",
            "Consumers that talked to Redis in the last minute.",
            state.active_consumers(ACTIVE_WITHIN_S),
        ),
        per_consumer,
        gauge(
            "pipeline_oldest_pending_age_seconds",
            "Age (since enqueue) of the oldest pending entry; 0 if none.",
            state.oldest_pending_age_s or 0.0,
        ),
        gauge(
            "pipeline_oldest_undelivered_age_seconds",
            "Age (since enqueue) of the oldest entry never delivered; 0 if none.",
            state.oldest_undelivered_age_s or 0.0,
        ),
        gauge(
            "pipeline_dead_letter_length",
            "Entries in the dead-letter stream.",
            state.dead_letters,
        ),
        gauge(
            "pipeline_stream_last_id_ahead_seconds",
            "How far the stream's last entry ID is past Redis's clock: another "
            "producer wrote IDs of its own (later IDs are pinned to it, ages unknown).",
            state.last_id_ahead_s,
        ),
        gauge(
            "pipeline_stream_ids_exhausted",
            "1 if the stream's last ID is the largest possible: no entry can be added.",
            int(state.ids_exhausted),
        ),
        gauge(
            "pipeline_delayed_tasks",
            "Tasks waiting to be due, outside the stream: delayed (countdown, "
            "run_at) and retries waiting for their backoff.",
            state.delayed,
        ),
        gauge(
            "pipeline_delayed_oldest_overdue_seconds",
            "How long past due the earliest waiting task is (0: none is overdue); "
            "consumers move due tasks within a second.",
            state.oldest_overdue_s,
        ),
        gauge(
            "pipeline_other_groups",
            "Other consumer groups on the stream (trimming keeps what they need).",
            len(state.other_groups),
        ),
        gauge(
            "pipeline_other_groups_max_lag",
            "The largest lag among the other groups (what they keep from trimming).",
            max((g.lag or 0 for g in state.other_groups), default=0),
        ),
    ]
