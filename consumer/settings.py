"""Consumer settings: a frozen dataclass filled from the environment at start."""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline_core.env import SettingsError, log_level, number, text
from pipeline_core.keys import Queue, queue_from_env
from pipeline_core.redis_settings import RedisSettings, redis_from_env


@dataclass(frozen=True, slots=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    queue: Queue = field(default_factory=Queue)
    consumer_name: str = "consumer"
    task_modules: tuple[str, ...] = ()
    max_deliveries: int = 5
    # Longer than the slowest healthy task would be idle without its heartbeat; an entry
    # idle this long is taken over by another consumer (XAUTOCLAIM).
    claim_idle_ms: int = 30_000
    claim_interval_ms: int = 1_000
    # Entries per read (COUNT); None adapts it to the tasks' durations (batching.py).
    batch_size: int | None = None
    block_ms: int = 2_000
    socket_timeout_s: float = 10.0  # must exceed block_ms, or a blocked read times out
    ack_interval_ms: int = 1_000
    trim_interval_ms: int = 5_000
    task_timeout_s: float = 600.0
    result_ttl_s: int = 86_400
    # A failed task's k-th retry waits about RETRY_BACKOFF_S * 2^(k-1), at most
    # RETRY_BACKOFF_MAX_S (tasks may set their own: @task(backoff_s=...)).
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 300.0
    # How often the clock thread moves due delayed tasks onto the stream and ticks the
    # periodic tasks (a due task starts at most about this late, with an idle consumer).
    clock_interval_ms: int = 200
    result_max_bytes: int = 64 * 1024  # a larger result dead-letters its entry
    reconnect_max_delay_s: float = 5.0
    metrics_port: int = 9100
    metrics_host: str = "0.0.0.0"  # the pod's address: Prometheus and the kubelet
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
    settings = Settings(
        redis=redis_from_env(env),
        queue=queue_from_env(env),
        consumer_name=text(
            env, "CONSUMER_NAME", f"{socket.gethostname()}-{os.getpid()}"
        ),
        task_modules=tuple(
            m.strip() for m in env.get("TASK_MODULES", "").split(",") if m.strip()
        ),
        max_deliveries=number(env, "MAX_DELIVERIES", int, d.max_deliveries, 1),
        claim_idle_ms=number(env, "CLAIM_IDLE_MS", int, d.claim_idle_ms, 1),
        claim_interval_ms=number(env, "CLAIM_INTERVAL_MS", int, d.claim_interval_ms, 0),
        # Unset or empty: 0, read as None (adaptive); a value given must be 1 or more.
        batch_size=number(env, "BATCH_SIZE", int, 0, 1, 10_000) or None,
        block_ms=number(env, "BLOCK_MS", int, d.block_ms, 1),
        socket_timeout_s=number(
            env, "SOCKET_TIMEOUT_S", float, d.socket_timeout_s, 0.1
        ),
        ack_interval_ms=number(env, "ACK_INTERVAL_MS", int, d.ack_interval_ms, 0),
        trim_interval_ms=number(env, "TRIM_INTERVAL_MS", int, d.trim_interval_ms, 0),
        task_timeout_s=number(env, "TASK_TIMEOUT_S", float, d.task_timeout_s, 0.001),
        result_ttl_s=number(env, "RESULT_TTL_S", int, d.result_ttl_s, 1),
        retry_backoff_s=number(env, "RETRY_BACKOFF_S", float, d.retry_backoff_s, 0.001),
        retry_backoff_max_s=number(
            env, "RETRY_BACKOFF_MAX_S", float, d.retry_backoff_max_s, 0.001
        ),
        clock_interval_ms=number(
            env, "CLOCK_INTERVAL_MS", int, d.clock_interval_ms, 10, 60_000
        ),
        result_max_bytes=number(
            env, "RESULT_MAX_BYTES", int, d.result_max_bytes, 4, 512 * 1024 * 1024
        ),
        reconnect_max_delay_s=number(
            env, "RECONNECT_MAX_DELAY_S", float, d.reconnect_max_delay_s, 0.01
        ),
        metrics_port=number(env, "METRICS_PORT", int, d.metrics_port, 0, 65535),
        metrics_host=text(env, "METRICS_HOST", d.metrics_host),
        log_level=log_level(env, d.log_level),
    )
    if settings.socket_timeout_s * 1000 <= settings.block_ms:
        raise SettingsError(
            f"SOCKET_TIMEOUT_S ({settings.socket_timeout_s:g} s) must exceed BLOCK_MS "
            f"({settings.block_ms} ms), or every blocked read would time out"
        )
    return settings
