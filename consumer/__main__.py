"""`python -m consumer`: one worker process. Settings, logging, client, metrics,
signals, run."""

import logging
import os
import signal
import sys
from types import FrameType

import redis
from prometheus_client import REGISTRY
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from consumer import health
from consumer.errors import ConsumerError
from consumer.logs import configure_logging
from consumer.metrics import ConsumerMetrics
from consumer.settings import Settings, from_env
from consumer.tasks import TASKS, load_task_modules
from consumer.worker import Worker

log = logging.getLogger("consumer")


def connect(settings: Settings) -> redis.Redis:
    """A client that retries single commands briefly; the worker loop outlives long
    outages."""
    return redis.Redis.from_url(
        settings.redis_url,
        username=settings.redis_username,
        password=settings.redis_password,
        **tls_options(settings.redis_url, settings),
        decode_responses=True,
        client_name=settings.consumer_name,  # CLIENT LIST shows the pod or host and pid
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=min(settings.socket_timeout_s, 5.0),
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def tls_options(url: str, settings: Settings) -> dict[str, str | None]:
    """Certificates for rediss:// URLs: the CA to trust, an optional client pair."""
    if not url.startswith("rediss://"):
        return {}
    return {
        "ssl_ca_certs": settings.redis_ca_file,
        "ssl_certfile": settings.redis_cert_file,
        "ssl_keyfile": settings.redis_key_file,
    }


def main() -> int:
    try:
        settings = from_env(os.environ)
        configure_logging(settings.log_level, settings.consumer_name)
        load_task_modules(settings.task_modules)
    except ConsumerError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 2
    worker = Worker(connect(settings), settings, TASKS, ConsumerMetrics(REGISTRY))

    def stop(signum: int, frame: FrameType | None) -> None:
        # The loop finishes the entry in hand, acks it and releases the rest.
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.metrics_port:
        health.serve(
            settings.metrics_port,
            REGISTRY,
            lambda: worker.progress_s,
            settings.stuck_after_s,
        )
    log.info(
        "consumer started",
        extra={
            "stream": settings.stream,
            "group": settings.group,
            "tasks": sorted(TASKS),
            "metrics_port": settings.metrics_port,
        },
    )
    worker.run()
    log.info("consumer stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
