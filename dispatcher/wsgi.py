"""Entry point for gunicorn: reads the environment and builds the app
(`dispatcher.wsgi:create()`)."""

import dataclasses
import logging
import os

import redis
from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from dispatcher.app import create_app
from dispatcher.console import start_sampler
from dispatcher.housekeeping import start_housekeeper
from dispatcher.settings import Settings, from_env
from dispatcher.stream_state import StreamStateCollector
from pipeline_core.connection import NO_RETRY, Client, connect

log = logging.getLogger(__name__)


def connect_dispatcher(settings: Settings, timeout_s: float | None = None) -> Client:
    """A client that never retries on its own: a retried XADD whose reply was lost
    would write the batch twice, so a failure is answered 503 and the caller decides.
    The dispatcher starts while Redis is down (/readyz says so): it cannot ask Redis
    whether it is a cluster then, and takes it for a single node (REDIS_CLUSTER
    removes the guess)."""
    timeout_s = settings.socket_timeout_s if timeout_s is None else timeout_s
    try:
        client = connect(
            settings.redis, socket_timeout_s=timeout_s, retry=NO_RETRY,
            client_name="dispatcher", queue=settings.queue,
        )  # fmt: skip
    except (redis.ConnectionError, redis.TimeoutError):
        log.warning("redis unavailable at start; taken for a single node")
        single = dataclasses.replace(settings.redis, cluster=False)
        return connect(
            single, socket_timeout_s=timeout_s, retry=NO_RETRY, client_name="dispatcher"
        )
    return client


def create() -> Flask:
    settings = from_env(os.environ)
    if "THREADS" in os.environ:  # the gthread worker's setting, before gevent
        log.warning("THREADS ignored: connections are greenlets (WORKER_CONNECTIONS)")
    state_client = connect_dispatcher(settings, timeout_s=settings.state_timeout_s)
    budget = (settings.memory_budget_bytes, settings.memory_budget_ratio)
    state = StreamStateCollector(state_client, settings.queue, budget)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several gunicorn workers
        # Metrics write to shared files; /metrics serves their sum plus the state.
        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
        served.register(state)
        client = connect_dispatcher(settings)
        start_sampler(settings, client)  # the console chart's history, in Redis
        start_housekeeper(client, settings.queue, settings.dead_letter_max_age_s)
        return create_app(settings, client, CollectorRegistry(), served)
    REGISTRY.register(state)
    client = connect_dispatcher(settings)
    start_sampler(settings, client)
    start_housekeeper(client, settings.queue, settings.dead_letter_max_age_s)
    return create_app(settings, client, REGISTRY)
