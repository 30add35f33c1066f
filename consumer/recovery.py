"""What a worker does about Redis failing, between its polls: any failure (lost
connection, or an error reply: OOM, MISCONF, READONLY, LOADING, NOGROUP, ...) is said
once per outage, counted, and retried after a jittered backoff (`resume_s`), without
a restart; a group found missing (NOGROUP) is created again before the next poll."""

import logging
import random
import time

import redis

from consumer.metrics import ConsumerMetrics
from consumer.settings import Settings
from pipeline_core.connection import Client
from pipeline_core.lag import group_row, no_such_key
from pipeline_core.replies import REASONS, reason

log = logging.getLogger(__name__)


def ensure_group(
    client: Client, settings: Settings, metrics: ConsumerMetrics, missing: bool = False
) -> None:
    """Create the group at the start of the stream (entries written before any
    consumer existed are read too) unless it exists. Asked first, with a read:
    under maxmemory Redis refuses XGROUP CREATE even for a group that exists.
    `missing`: Redis said NOGROUP, so the group or its stream was deleted."""
    queue = settings.queue
    if not missing and _group_exists(client, settings):
        return
    try:
        client.xgroup_create(queue.stream, queue.group, "0", mkstream=True)
    except redis.ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise
        return
    if missing:
        # Destroyed: every entry left runs again. Stream deleted: what it held
        # is gone. Either way an operator must hear of it.
        metrics.group_recreated.inc()
        log.error("consumer group was missing: created again", extra={
            "stream": queue.stream, "group": queue.group})  # fmt: skip


def _group_exists(client: Client, settings: Settings) -> bool:
    queue = settings.queue
    try:
        groups = client.xinfo_groups(queue.stream)
    except redis.ResponseError as error:
        if no_such_key(error):
            return False
        raise
    return group_row(groups, queue.group) is not None


class Recovery:
    """One worker's outage state: failures in a row, whether its group is known to
    exist, and when its next poll may run (`resume_s`, monotonic)."""

    def __init__(
        self, client: Client, settings: Settings, metrics: ConsumerMetrics
    ) -> None:
        self.client, self.settings, self.metrics = client, settings, metrics
        self._failures, self._group = 0, "unknown"
        self.resume_s = 0.0  # after a failure, no poll before this

    def ready(self) -> None:
        """Before a poll: the group made sure of, at the start and after NOGROUP."""
        if self._group != "ready":
            missing = self._group == "missing"
            ensure_group(self.client, self.settings, self.metrics, missing)
            self._group = "ready"

    def failed(self, error: Exception) -> None:
        """A poll failed: said once per outage, counted, the next poll put off."""
        self._failures += 1
        kind = reason(error)
        if kind in ("nogroup", "unblocked"):
            self._group = "missing"
        if self._failures == 1:  # said once per outage, not once per retry
            facts = {"reason": kind, "meaning": REASONS[kind]}
            log.warning(
                "redis unavailable, retrying",
                extra={**facts, "error": repr(error)[:500]},
            )
        self.metrics.redis_errors.labels(kind).inc()
        if kind in ("connection", "timeout"):
            self.metrics.redis_reconnects.inc()
        cap = self.settings.reconnect_max_delay_s
        pause_s = min(cap, 0.05 * 2**self._failures) * random.uniform(0.5, 1.0)
        self.resume_s = time.monotonic() + pause_s

    def succeeded(self) -> None:
        """A poll went through: an outage, if there was one, is over."""
        if self._failures:
            log.info("redis available again", extra={"failures": self._failures})
            self._failures = 0
