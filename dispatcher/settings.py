"""Dispatcher settings: a frozen dataclass filled from the environment at start."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from dispatcher.errors import SettingsError


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    redis_password: str | None = None
    stream: str = "tasks"
    group: str = "workers"
    dead_letter_stream: str = "tasks:dead"
    host: str = "0.0.0.0"  # all interfaces: what a container behind a Service needs
    port: int = 8000
    threads: int = 8
    # gunicorn worker processes. Above 1, metrics use prometheus_client's multiprocess
    # mode (files in PROMETHEUS_MULTIPROC_DIR, wiped at start).
    http_workers: int = 1
    max_messages: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_pacing_s: float = 60.0
    # Refuse new work (429) while the group has this many entries still to finish.
    max_backlog: int = 1_000_000
    socket_timeout_s: float = 5.0
    # Stream-state reads at scrape time give up after this; they never fail a scrape.
    state_timeout_s: float = 0.5
    log_level: str = "INFO"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
N = TypeVar("N", int, float)


def from_env(env: Mapping[str, str]) -> Settings:
    """Build Settings from environment variables; a bad value raises SettingsError."""
    defaults = Settings()
    stream = env.get("STREAM", defaults.stream)
    if not stream:
        raise SettingsError("STREAM must not be empty")
    log_level = env.get("LOG_LEVEL", defaults.log_level).upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(
            f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
        )
    return Settings(
        redis_url=env.get("REDIS_URL", defaults.redis_url),
        redis_password=_secret(env, "REDIS_PASSWORD"),
        stream=stream,
        group=env.get("GROUP", defaults.group) or defaults.group,
        dead_letter_stream=env.get("DEAD_LETTER_STREAM") or f"{stream}:dead",
        host=env.get("HOST", defaults.host),
        port=_number(env, "PORT", int, defaults.port, low=1, high=65535),
        threads=_number(env, "THREADS", int, defaults.threads, low=1, high=256),
        http_workers=_number(env, "HTTP_WORKERS", int, defaults.http_workers, 1, 64),
        max_messages=_number(env, "MAX_MESSAGES", int, defaults.max_messages, low=1),
        max_body_bytes=_number(
            env, "MAX_BODY_BYTES", int, defaults.max_body_bytes, low=1
        ),
        max_pacing_s=_number(env, "MAX_PACING_S", float, defaults.max_pacing_s, low=0),
        socket_timeout_s=_number(
            env, "SOCKET_TIMEOUT_S", float, defaults.socket_timeout_s, low=0.1
        ),
        state_timeout_s=_number(
            env, "STATE_TIMEOUT_S", float, defaults.state_timeout_s, low=0.01
        ),
        max_backlog=_number(env, "MAX_BACKLOG", int, defaults.max_backlog, low=1),
        log_level=log_level,
    )


def _number(
    env: Mapping[str, str],
    name: str,
    kind: type[N],
    default: N,
    low: float,
    high: float = float("inf"),
) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (a mounted Secret)."""
    path = env.get(f"{name}_FILE")
    if not path:
        return env.get(name) or None
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().strip() or None
    except OSError as error:
        raise SettingsError(
            f"{name}_FILE: cannot read {path!r}: {error.strerror}"
        ) from None
