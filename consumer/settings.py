"""Consumer settings: a frozen dataclass filled from the environment at start."""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from consumer.errors import SettingsError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    redis_username: str | None = None
    redis_password: str | None = None
    # TLS (rediss:// URLs): the CA that signed Redis's certificate, and a client
    # certificate and key when Redis asks for one (tls-auth-clients).
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    stream: str = "tasks"
    group: str = "workers"
    dead_letter_stream: str = "tasks:dead"
    consumer_name: str = "consumer"
    task_modules: tuple[str, ...] = ()
    max_deliveries: int = 5
    # Longer than the slowest healthy task would be idle without its heartbeat; an entry
    # idle this long is taken over by another consumer (XAUTOCLAIM).
    claim_idle_ms: int = 30_000
    claim_interval_ms: int = 1_000
    batch_size: int = 10
    block_ms: int = 2_000
    socket_timeout_s: float = 10.0  # must exceed block_ms, or a blocked read times out
    ack_interval_ms: int = 1_000
    trim_interval_ms: int = 5_000
    task_timeout_s: float = 600.0
    result_ttl_s: int = 86_400
    reconnect_max_delay_s: float = 5.0
    metrics_port: int = 9100
    log_level: str = "INFO"

    @property
    def stuck_after_s(self) -> float:
        """No progress for this long means the loop is stuck (liveness fails): a task
        may run task_timeout_s, a read may block block_ms, plus a margin."""
        return self.task_timeout_s + self.block_ms / 1000 + 30

    @property
    def heartbeat_interval_s(self) -> float:
        """Renew held claims three times per claim_idle_ms, so one late beat is
        harmless."""
        return self.claim_idle_ms / 3000


def from_env(env: Mapping[str, str]) -> Settings:
    """Build Settings from environment variables; a bad value raises SettingsError."""
    d = Settings()
    stream = _text(env, "STREAM", d.stream)
    settings = Settings(
        redis_url=_text(env, "REDIS_URL", d.redis_url),
        redis_username=env.get("REDIS_USERNAME") or None,
        redis_password=_secret(env, "REDIS_PASSWORD"),
        redis_ca_file=env.get("REDIS_CA_FILE") or None,
        redis_cert_file=env.get("REDIS_CERT_FILE") or None,
        redis_key_file=env.get("REDIS_KEY_FILE") or None,
        stream=stream,
        group=_text(env, "GROUP", d.group),
        dead_letter_stream=_text(env, "DEAD_LETTER_STREAM", f"{stream}:dead"),
        consumer_name=_text(
            env, "CONSUMER_NAME", f"{socket.gethostname()}-{os.getpid()}"
        ),
        task_modules=tuple(
            m.strip() for m in env.get("TASK_MODULES", "").split(",") if m.strip()
        ),
        max_deliveries=_number(env, "MAX_DELIVERIES", int, d.max_deliveries, 1),
        claim_idle_ms=_number(env, "CLAIM_IDLE_MS", int, d.claim_idle_ms, 1),
        claim_interval_ms=_number(
            env, "CLAIM_INTERVAL_MS", int, d.claim_interval_ms, 0
        ),
        batch_size=_number(env, "BATCH_SIZE", int, d.batch_size, 1, 10_000),
        block_ms=_number(env, "BLOCK_MS", int, d.block_ms, 1),
        socket_timeout_s=_number(
            env, "SOCKET_TIMEOUT_S", float, d.socket_timeout_s, 0.1
        ),
        ack_interval_ms=_number(env, "ACK_INTERVAL_MS", int, d.ack_interval_ms, 0),
        trim_interval_ms=_number(env, "TRIM_INTERVAL_MS", int, d.trim_interval_ms, 0),
        task_timeout_s=_number(env, "TASK_TIMEOUT_S", float, d.task_timeout_s, 0.001),
        result_ttl_s=_number(env, "RESULT_TTL_S", int, d.result_ttl_s, 1),
        reconnect_max_delay_s=_number(
            env, "RECONNECT_MAX_DELAY_S", float, d.reconnect_max_delay_s, 0.01
        ),
        metrics_port=_number(env, "METRICS_PORT", int, d.metrics_port, 0, 65535),
        log_level=_log_level(env, d.log_level),
    )
    if settings.socket_timeout_s * 1000 <= settings.block_ms:
        raise SettingsError(
            f"SOCKET_TIMEOUT_S ({settings.socket_timeout_s:g} s) must exceed BLOCK_MS "
            f"({settings.block_ms} ms), or every blocked read would time out"
        )
    return settings


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not value.strip():
        raise SettingsError(f"{name} must not be empty")
    return value


def _log_level(env: Mapping[str, str], default: str) -> str:
    level = env.get("LOG_LEVEL", default).upper()
    if level not in LOG_LEVELS:
        raise SettingsError(
            f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    return level


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
