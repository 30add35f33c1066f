"""The command line's settings, from the same environment variables as the services."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

import redis


class CliError(Exception):
    """Something the operator must fix; printed as one line, exit code 2."""


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    redis_username: str | None = None
    redis_password: str | None = None
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    stream: str = "tasks"
    group: str = "workers"
    dead_letter_stream: str = "tasks:dead"
    claim_idle_ms: int = 30_000
    dispatcher_url: str = "http://localhost:8000"
    token: str | None = None  # a bearer token for the dispatcher


def from_env(env: Mapping[str, str]) -> Settings:
    d = Settings()
    stream = env.get("STREAM") or d.stream
    try:
        claim_idle_ms = int(env.get("CLAIM_IDLE_MS") or d.claim_idle_ms)
    except ValueError:
        raise CliError(
            f"CLAIM_IDLE_MS must be an int, got {env['CLAIM_IDLE_MS']!r}"
        ) from None
    return Settings(
        redis_url=env.get("REDIS_URL") or d.redis_url,
        redis_username=env.get("REDIS_USERNAME") or None,
        redis_password=_secret(env, "REDIS_PASSWORD"),
        redis_ca_file=env.get("REDIS_CA_FILE") or None,
        redis_cert_file=env.get("REDIS_CERT_FILE") or None,
        redis_key_file=env.get("REDIS_KEY_FILE") or None,
        stream=stream,
        group=env.get("GROUP") or d.group,
        dead_letter_stream=env.get("DEAD_LETTER_STREAM") or f"{stream}:dead",
        claim_idle_ms=claim_idle_ms,
        dispatcher_url=(env.get("DISPATCHER_URL") or d.dispatcher_url).rstrip("/"),
        token=_secret(env, "DISPATCH_TOKEN"),
    )


def connect(settings: Settings) -> redis.Redis:
    tls = {}
    if settings.redis_url.startswith("rediss://"):
        tls = {
            "ssl_ca_certs": settings.redis_ca_file,
            "ssl_certfile": settings.redis_cert_file,
            "ssl_keyfile": settings.redis_key_file,
        }
    return redis.Redis.from_url(
        settings.redis_url,
        username=settings.redis_username,
        password=settings.redis_password,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=3,
        **tls,
    )


def _secret(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(f"{name}_FILE")
    if not path:
        return env.get(name) or None
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().strip() or None
    except OSError as error:
        raise CliError(f"{name}_FILE: cannot read {path!r}: {error.strerror}") from None


def environment() -> Settings:
    return from_env(os.environ)
