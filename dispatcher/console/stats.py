"""Throughput history for the console's chart, kept in Redis, not in a process's
memory (a restart or another replica loses nothing) and without Prometheus.

Every SAMPLE_INTERVAL_S one dispatcher process, whichever takes the lock, reads two
cheap counters (summed over the partitions, PARTITIONS) and appends them to the
capped stream `{tasks}:stats`:
  dispatched  XINFO STREAM entries-added: entries ever added to the stream
  acked       the group's entries-read minus its pending count: entries delivered
              and no longer pending (acknowledged or dead-lettered), approximately
  backlog     lag + pending (pipeline_core.lag.read_backlog)
The chart's endpoint reads the last 15 minutes and turns counter deltas into rates.
"""

import itertools
import logging
import threading
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.lag import read_backlog
from pipeline_core.replies import FAILURES
from pipeline_core.wire import entry_ms, stream_entries

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 5.0
# The lock outlives all but the end of an interval: one sample per interval, whichever
# of several processes or replicas tries first once it expires (clocks never compared).
LOCK_MS = 4_500
MAX_SAMPLES = 200  # XADD MAXLEN ~ 200 keeps at least 200: over 16 minutes
WINDOW_MS = 15 * 60 * 1000
GAP_MS = 30_000  # samples further apart: nobody sampled in between; no rate drawn


def stats_key(queue: Queue) -> str:
    return queue.key("stats")


def lock_key(queue: Queue) -> str:
    return queue.key("stats:lock")


def sample_once(client: Client, queue: Queue) -> bool:
    """Append one sample unless another process took this interval (SET NX PX in
    the stream's slot); True if this call wrote one."""
    if not client.set(lock_key(queue), "1", nx=True, px=LOCK_MS):
        return False
    fields = counters(client, queue)
    if not fields:
        return False
    sample: dict[FieldT, EncodableT] = {name: n for name, n in fields.items()}
    client.xadd(stats_key(queue), sample, maxlen=MAX_SAMPLES, approximate=True)
    return True


def counters(client: Client, queue: Queue) -> dict[str, int]:
    """The counters as of now, the queue's totals over its partitions (PARTITIONS);
    empty before any stream exists.

    Why totals in one stream, not a stream of samples per partition: the chart shows
    the queue's rates, and the rate of a sum of counters is the sum of their rates, so
    one sample of sums per interval draws the same lines with one XADD and no
    aligning of P series by time. `acked` is left out while a partition cannot count
    it (no group yet): a point without a rate, as on one stream."""
    many = queue.partitions > 1  # a partition without work yet must not hide acked
    each = [_counters(client, part, many) for part in partitions.parts(queue)]
    found = [one for one in each if one]
    if len(each) == 1 or not found:
        return found[0] if found else {}
    names = [name for name in found[0] if all(name in one for one in found)]
    return {name: sum(one[name] for one in found) for name in names}


def _counters(
    client: Client, queue: Queue, unread_as_zero: bool = False
) -> dict[str, int]:
    """One stream's counters; empty before it exists."""
    with client.pipeline(transaction=False) as pipe:
        pipe.xinfo_stream(queue.stream)
        pipe.xinfo_groups(queue.stream)
        info, groups = pipe.execute(raise_on_error=False)
    if isinstance(info, redis.ResponseError) and "no such key" in str(info):
        return {}
    for reply in (info, groups):
        if isinstance(reply, Exception):
            raise reply
    fields = {"dispatched": int(info["entries-added"])}
    row = next((row for row in groups if row["name"] == queue.group), None)
    acked = _acked(row, unread_as_zero)
    if acked is not None:
        fields["acked"] = acked
    fields["backlog"] = read_backlog(client, queue)
    return fields


def _acked(row: dict[str, Any] | None, unread_as_zero: bool) -> int | None:
    """Entries the group finished; None when Redis cannot tell (entries-read is nil:
    a group set to an arbitrary ID, or one that read nothing yet, which counts as
    0 when `unread_as_zero`: a partition that has had no work finished none)."""
    if row is None:
        return None
    if row.get("entries-read") is not None:
        return int(row["entries-read"]) - int(row["pending"])
    return 0 if unread_as_zero and row["last-delivered-id"] == "0-0" else None


def throughput(client: Client, queue: Queue, now_ms: int) -> dict[str, Any]:
    """The last 15 minutes as points: rates (per second) between samples, and the
    backlog; a rate is None across a gap or a counter reset (stream recreated)."""
    reply = client.xrevrange(
        stats_key(queue), max="+", min=str(now_ms - WINDOW_MS), count=MAX_SAMPLES
    )
    samples = list(reversed(stream_entries(reply)))
    points = [_point(a, b) for a, b in itertools.pairwise(samples)]
    return {"now_ms": now_ms, "window_ms": WINDOW_MS, "points": points}


def _point(
    earlier: tuple[str, dict[str, str]], later: tuple[str, dict[str, str]]
) -> dict[str, Any]:
    span_ms = entry_ms(later[0]) - entry_ms(earlier[0])
    return {
        "t": entry_ms(later[0]),
        "dispatched": _rate(earlier[1], later[1], "dispatched", span_ms),
        "acked": _rate(earlier[1], later[1], "acked", span_ms),
        "backlog": _number(later[1].get("backlog")),
    }


def _rate(
    earlier: dict[str, str], later: dict[str, str], name: str, span_ms: int
) -> float | None:
    before, after = _number(earlier.get(name)), _number(later.get(name))
    if before is None or after is None or not 0 < span_ms <= GAP_MS:
        return None
    delta = after - before
    return round(delta * 1000 / span_ms, 2) if delta >= 0 else None


def _number(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None  # not ours: the chart skips it rather than failing


class Sampler:
    """Samples every SAMPLE_INTERVAL_S until `stopping` is set (a daemon thread of
    each dispatcher process); Redis errors are logged once per outage."""

    def __init__(
        self, client: Client, queue: Queue, stopping: threading.Event | None = None
    ) -> None:
        self.client, self.queue = client, queue
        self.stopping = stopping or threading.Event()

    def run(self) -> None:
        failing = False
        while True:
            try:
                sample_once(self.client, self.queue)
                failing = False
            except FAILURES:
                if not failing:
                    log.warning("throughput sample failed", exc_info=True)
                failing = True
            if self.stopping.wait(SAMPLE_INTERVAL_S):
                return
