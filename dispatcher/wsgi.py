"""Entry point for gunicorn: reads the environment and builds the app
(`dispatcher.wsgi:create()`)."""

import os

import redis
from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from redis.backoff import NoBackoff
from redis.retry import Retry

from dispatcher.app import create_app
from dispatcher.settings import Settings, from_env
from dispatcher.stream_state import StreamStateCollector


def connect(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """A client that never retries on its own: a retried XADD whose reply was lost would
    write the batch twice, so a failure is answered 503 and the caller decides."""
    timeout_s = settings.socket_timeout_s if timeout_s is None else timeout_s
    tls = {}
    if settings.redis_url.startswith("rediss://"):  # certificates for TLS
        tls = {
            "ssl_ca_certs": settings.redis_ca_file,
            "ssl_certfile": settings.redis_cert_file,
            "ssl_keyfile": settings.redis_key_file,
        }
    return redis.Redis.from_url(
        settings.redis_url,
        username=settings.redis_username,
        password=settings.redis_password,
        **tls,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def create() -> Flask:
    settings = from_env(os.environ)
    s = settings
    state_client = connect(settings, timeout_s=settings.state_timeout_s)
    state = StreamStateCollector(state_client, s.stream, s.group, s.dead_letter_stream)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several gunicorn workers
        # Metrics write to shared files; /metrics serves their sum plus the state.
        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
        served.register(state)
        return create_app(settings, connect(settings), CollectorRegistry(), served)
    REGISTRY.register(state)
    return create_app(settings, connect(settings), REGISTRY)
