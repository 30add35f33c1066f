"""`python -m consumer`: one worker process. Settings, logging, client, metrics,
signals, run."""

import gc
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from types import FrameType

from prometheus_client import REGISTRY
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from consumer import health, keeper, rotation
from consumer.errors import ConsumerError
from consumer.keeper import Beacon
from consumer.metrics import ConsumerMetrics
from consumer.ownership import CLAIM_IF_OWNER, claim_if_owner
from consumer.settings import Settings, from_env
from consumer.tasks import TASKS, load_task_modules
from consumer.worker import Worker
from pipeline_core import partitions
from pipeline_core.connection import Client, answers, connect, redacted
from pipeline_core.env import SettingsError
from pipeline_core.logs import configure_logging

log = logging.getLogger("consumer")


def connect_consumer(settings: Settings) -> Client:
    """A client that retries single commands briefly; the worker loop outlives long
    outages."""
    return connect(
        settings.redis,
        socket_timeout_s=settings.socket_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=3),
        client_name=settings.consumer_name,  # CLIENT LIST shows the pod or host and pid
        queue=settings.queue,
    )


def renewal(settings: Settings) -> keeper.Renew:
    """The keeper's renewal: the worker's claim script on a client of its own. With
    PARTITIONS > 1 the held IDs are task IDs naming their partition (p<i>-<entry>)."""
    script = connect_consumer(settings).register_script(CLAIM_IF_OWNER)
    if settings.queue.partitions == 1:
        return lambda entry_ids: claim_if_owner(script, settings, entry_ids, 0)

    def renew(held: list[str]) -> list[str]:
        by_partition: dict[int, list[str]] = {}
        for given in held:
            index, _, entry_id = partitions.locate(settings.queue, given)
            by_partition.setdefault(index, []).append(entry_id)
        renewed = []
        for index, entry_ids in by_partition.items():
            part = replace(settings, queue=partitions.parts(settings.queue)[index])
            owned = claim_if_owner(script, part, entry_ids, 0)
            renewed += [f"p{index}-{entry_id}" for entry_id in owned]
        return renewed

    return renew


def collect_less() -> None:
    """What start-up made (modules, the task table) lives as long as the process:
    freeze it out of the cyclic collector's scans (before the keeper's fork, which
    then copies less), and scan the young generation every 50,000 allocations, not
    700: a no-op task allocates a few dozen objects, and each scan cost about 5 % of
    the drain (docs/performance.md). Memory held by cycles is freed a little later."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def make_workers(
    client: Client, settings: Settings, stopping: threading.Event, beacon: Beacon
) -> list[Worker]:
    """One worker, or one per partition (PARTITIONS), sharing the client and metrics."""
    metrics = ConsumerMetrics(REGISTRY)
    queues = partitions.parts(settings.queue)
    if len(queues) == 1:
        return [Worker(client, settings, TASKS, metrics, stopping, beacon)]
    return [
        Worker(client, replace(settings, queue=queue), TASKS, metrics, stopping,
               beacon, partition=index)
        for index, queue in enumerate(queues)
    ]  # fmt: skip


def wait_for_redis(settings: Settings, stopping: threading.Event) -> None:
    """Before asking Redis whether it is a cluster, wait until it answers (unless
    REDIS_CLUSTER says): a guess made while it is down could be wrong for good."""
    if settings.redis.cluster is not None:
        return
    delay_s = 0.1
    while not stopping.is_set() and not answers(settings.redis):
        if delay_s == 0.1:
            url = redacted(settings.redis.url)
            log.warning("waiting for redis to answer", extra={"url": url})
        stopping.wait(delay_s)
        delay_s = min(delay_s * 2, settings.reconnect_max_delay_s)


def main() -> int:
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # The loop finishes the entry in hand, acks it and releases the rest.
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        settings = from_env(os.environ)
        configure_logging(
            settings.log_level, "consumer", consumer=settings.consumer_name
        )
        load_task_modules(settings.task_modules)
    except (ConsumerError, SettingsError) as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 2
    collect_less()
    beacon = Beacon()
    keeper.start(beacon, settings.heartbeat_interval_s, settings.task_timeout_s,
                 lambda: renewal(settings))  # fmt: skip
    try:
        wait_for_redis(settings, stopping)
        client = connect_consumer(settings)
    except SettingsError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 2
    workers = make_workers(client, settings, stopping, beacon)
    if settings.metrics_port:
        health.serve(
            (settings.metrics_host, settings.metrics_port),
            REGISTRY,
            lambda: rotation.progress_s(workers),
            settings.stuck_after_s,
        )
    log.info(
        "consumer started",
        extra={
            "stream": settings.queue.stream,
            "partitions": settings.queue.partitions,
            "group": settings.queue.group,
            "tasks": sorted(TASKS),
            "metrics": f"{settings.metrics_host}:{settings.metrics_port}",
        },
    )
    rotation.rotate(workers, stopping)
    log.info("consumer stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
