"""Entry point for gunicorn: reads the environment and builds the app
(`dispatcher.wsgi:create()`)."""

import os

import redis
from flask import Flask
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from dispatcher.app import create_app
from dispatcher.settings import Settings, from_env


def connect(settings: Settings) -> redis.Redis:
    """A client that never retries on its own: a retried XADD whose reply was lost would
    write the batch twice, so a failure is answered 503 and the caller decides."""
    return redis.Redis.from_url(
        settings.redis_url,
        password=settings.redis_password,
        decode_responses=True,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def create() -> Flask:
    settings = from_env(os.environ)
    return create_app(settings, connect(settings), REGISTRY)
