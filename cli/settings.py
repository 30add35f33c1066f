"""The command line's settings, from the same environment variables as the services.

Run beside `make run` with no REDIS_URL set, it reads the addresses `make run` chose
from .run/pipeline.env (the variables already set win)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_core.connection import NO_RETRY, Client, connect
from pipeline_core.env import log_level, number, secret, text
from pipeline_core.keys import Queue, queue_from_env
from pipeline_core.redis_settings import RedisSettings, redis_from_env

RUN_ENV = Path(".run") / "pipeline.env"  # written by `make run`


class CliError(Exception):
    """Something the operator must fix; printed as one line, exit code 2."""


@dataclass(frozen=True, slots=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    queue: Queue = field(default_factory=Queue)
    claim_idle_ms: int = 30_000
    dispatcher_url: str = "http://localhost:8000"
    token: str | None = None  # a bearer token for the dispatcher
    log_level: str = "WARNING"


def from_env(env: Mapping[str, str]) -> Settings:
    d = Settings()
    return Settings(
        redis=redis_from_env(env),
        queue=queue_from_env(env),
        claim_idle_ms=number(env, "CLAIM_IDLE_MS", int, d.claim_idle_ms, 1),
        dispatcher_url=text(env, "DISPATCHER_URL", d.dispatcher_url).rstrip("/"),
        token=secret(env, "DISPATCH_TOKEN"),
        log_level=log_level(env, d.log_level),
    )


def environment(
    env: Mapping[str, str] = os.environ, run_env: Path = RUN_ENV
) -> Settings:
    """The environment, plus what `make run` recorded when REDIS_URL (and
    REDIS_SENTINELS) is unset."""
    if "REDIS_URL" in env or "REDIS_SENTINELS" in env or not run_env.is_file():
        return from_env(env)
    recorded = dict(
        line.split("=", 1)
        for line in run_env.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return from_env({**recorded, **env})


def connect_cli(settings: Settings) -> Client:
    return connect(
        settings.redis,
        socket_timeout_s=5.0,
        connect_timeout_s=3.0,
        retry=NO_RETRY,
        client_name="pipeline-cli",
        queue=settings.queue,
    )
