"""The stream's state, read from Redis at scrape time and exported as gauges.

Only the dispatcher exports it, so sums over several consumer pods do not multiply it.
A scrape never fails because of Redis: the reads use a client with a short timeout, and
`pipeline_stream_state_up` says whether they worked. The names start with `pipeline_`,
not `dispatcher_`: they describe the shared stream, whichever process reads it.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# A lag Redis cannot tell (NULL) is counted by reading the entries, up to this many.
LAG_COUNT_LIMIT = 10_000
# Per-consumer pending is exported for this many consumers at most (the busiest).
CONSUMER_SERIES_LIMIT = 50
# A consumer that talked to Redis within this window counts as active.
ACTIVE_WITHIN_MS = 60_000


@dataclass
class StreamState:
    length: int = 0
    lag: int = 0
    pending: int = 0
    consumers: int = 0
    active_consumers: int = 0
    consumer_pending: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float = 0.0
    oldest_undelivered_age_s: float = 0.0
    dead_letters: int = 0


def entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def read_state(client: redis.Redis, stream: str, group: str, dead: str) -> StreamState:
    """Everything the gauges show, in a handful of round trips."""
    state = StreamState(dead_letters=int(client.xlen(dead)))
    if not client.exists(stream):
        return state
    state.length = int(client.xlen(stream))
    groups = [g for g in client.xinfo_groups(stream) if g["name"] == group]
    if not groups:
        state.lag = state.length  # no consumer has created the group: all waits
        first = client.xrange(stream, count=1)
        state.oldest_undelivered_age_s = _age_s(first[0][0] if first else None)
        return state
    info = groups[0]
    state.pending, state.consumers = int(info["pending"]), int(info["consumers"])
    _read_undelivered(client, stream, info, state)
    _read_pending(client, stream, group, state)
    return state


def _read_undelivered(
    client: redis.Redis, stream: str, info: dict[str, object], state: StreamState
) -> None:
    after = f"({info['last-delivered-id']}"  # exclusive: the first never delivered
    if info["lag"] is None:
        # Redis cannot tell (entries were deleted past the group's position): count.
        undelivered = client.xrange(stream, min=after, count=LAG_COUNT_LIMIT)
        state.lag = len(undelivered) if isinstance(undelivered, list) else 0
    else:
        state.lag = int(str(info["lag"]))
    first = client.xrange(stream, min=after, count=1) if state.lag else []
    state.oldest_undelivered_age_s = _age_s(first[0][0] if first else None)


def _read_pending(
    client: redis.Redis, stream: str, group: str, state: StreamState
) -> None:
    if state.pending:
        state.oldest_pending_age_s = _age_s(client.xpending(stream, group)["min"])
    consumers = client.xinfo_consumers(stream, group)
    state.active_consumers = sum(1 for c in consumers if c["idle"] < ACTIVE_WITHIN_MS)
    busiest = sorted(consumers, key=lambda c: -int(c["pending"]))[
        :CONSUMER_SERIES_LIMIT
    ]
    state.consumer_pending = {c["name"]: int(c["pending"]) for c in busiest}


def _age_s(entry_id: object) -> float:
    if not isinstance(entry_id, str):
        return 0.0
    return max(0.0, time.time() - entry_ms(entry_id) / 1000)


class StreamStateCollector(Collector):  # prometheus_client's extension point
    """A prometheus_client collector: `collect` runs at every scrape."""

    def __init__(self, client: redis.Redis, stream: str, group: str, dead: str) -> None:
        self.client, self.stream, self.group, self.dead = client, stream, group, dead

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_families(None, 0.0))  # no Redis call when the registry asks

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        try:
            state: StreamState | None = read_state(
                self.client, self.stream, self.group, self.dead
            )
        except redis.RedisError:
            state = None
        return iter(_families(state, time.perf_counter() - started))


def _families(state: StreamState | None, took_s: float) -> list[GaugeMetricFamily]:
    up = GaugeMetricFamily(
        "pipeline_stream_state_up", "1 if the last read of the stream state worked."
    )
    up.add_metric([], 0 if state is None else 1)
    took = GaugeMetricFamily(
        "pipeline_stream_state_read_seconds", "Time the last read of the state took."
    )
    took.add_metric([], took_s)
    if state is None:
        return [up, took]
    return [up, took, *_state_families(state)]


def _state_families(state: StreamState) -> list[GaugeMetricFamily]:
    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    per_consumer = GaugeMetricFamily(
        "pipeline_consumer_pending",
        "Entries delivered to a consumer and not yet acknowledged (busiest 50).",
        labels=["consumer"],
    )
    for name, pending in state.consumer_pending.items():
        per_consumer.add_metric([name], pending)
    return [
        gauge("pipeline_stream_length", "Entries on the stream (XLEN).", state.length),
        gauge("pipeline_group_lag", "Entries never delivered to the group.", state.lag),
        gauge(
            "pipeline_group_pending",
            "Entries delivered, not acknowledged.",
            state.pending,
        ),
        gauge("pipeline_group_consumers", "Consumers in the group.", state.consumers),
        gauge(
            "pipeline_group_consumers_active",
            "Consumers that talked to Redis in the last minute.",
            state.active_consumers,
        ),
        per_consumer,
        gauge(
            "pipeline_oldest_pending_age_seconds",
            "Age (since enqueue) of the oldest pending entry; 0 if none.",
            state.oldest_pending_age_s,
        ),
        gauge(
            "pipeline_oldest_undelivered_age_seconds",
            "Age (since enqueue) of the oldest entry never delivered; 0 if none.",
            state.oldest_undelivered_age_s,
        ),
        gauge(
            "pipeline_dead_letter_length",
            "Entries in the dead-letter stream.",
            state.dead_letters,
        ),
    ]
