"""Dispatcher settings: a frozen dataclass filled from the environment at start."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline_core.dead_letters import DEFAULT_MAX_AGE_S
from pipeline_core.env import (
    SettingsError,
    flag,
    log_level,
    number,
    secret,
    secret_lines,
    text,
)
from pipeline_core.keys import Queue, queue_from_env
from pipeline_core.redis_settings import RedisSettings, redis_from_env
from pipeline_core.replication import Replicas
from pipeline_core.timing import MAX_COUNTDOWN_S

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MIN_TOKEN_LENGTH = 16
MIN_SECRET_KEY_LENGTH = 32


@dataclass(frozen=True, slots=True)
class FrontDoor:
    """How gunicorn's gevent worker treats connections (docs/security.md): each is a
    greenlet, so a slow or idle client costs memory, not one of a few threads."""

    worker_connections: int = 1000  # connections one process holds at once
    # The absolute deadline to receive a request's head (gunicorn's keepalive: also how
    # long an idle kept-alive connection waits for its next request). Whole seconds.
    header_timeout_s: int = 5
    body_timeout_s: float = 10.0  # the absolute deadline to receive a /dispatch body


@dataclass(frozen=True, slots=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    queue: Queue = field(default_factory=Queue)
    host: str = "0.0.0.0"  # all interfaces: what a container behind a Service needs
    port: int = 8000
    # gunicorn worker processes. Above 1, metrics use prometheus_client's multiprocess
    # mode (files in PROMETHEUS_MULTIPROC_DIR, wiped at start).
    http_workers: int = 1
    front_door: FrontDoor = field(default_factory=FrontDoor)
    # Bearer tokens accepted on /dispatch and /results; rotate by listing old and new.
    tokens: tuple[str, ...] = ()
    allow_anonymous: bool = False  # only ever on loopback (make run)
    max_messages: int = 100_000
    # 8 MiB: a body of one long string with a character outside the BMP costs about
    # 11 times its size while parsed (docs/performance.md, the front door).
    max_body_bytes: int = 8 * 1024 * 1024
    max_payload_bytes: int = 64 * 1024  # one payload, encoded
    max_payload_depth: int = 32  # nesting of objects and lists in one payload
    # JSON values ('[', '{' and ',' counted in the raw body) a request may hold: what
    # bounds the memory of parsing it, whatever its shape (docs/performance.md).
    max_json_values: int = 500_000
    # A paced request (`delay`) ends within this from its start, whatever Redis does.
    max_pacing_s: float = 60.0
    max_paced_requests: int = 4  # paced requests one process runs at once (then 429)
    # How far ahead `countdown` / `run_at` may put a task (pipeline_core/timing.py).
    max_countdown_s: float = MAX_COUNTDOWN_S
    # Refuse new work (429) while the group has this many entries still to finish.
    max_backlog: int = 1_000_000
    # Refuse new work (507) while Redis uses more than this (pipeline_core/memory.py):
    # MEMORY_BUDGET_BYTES, or when 0, MEMORY_BUDGET_RATIO of Redis's maxmemory.
    # GET /results (and /tasks) a client may make in a minute, counted per token (or
    # per address on an anonymous run), in each dispatcher process.
    lookups_per_minute: int = 600
    idempotency_ttl_s: int = 86_400  # how long an Idempotency-Key's answer is kept
    memory_budget_bytes: int = 0
    memory_budget_ratio: float = 0.8
    # Dead letters older than this are deleted, by the dispatcher (housekeeping.py),
    # once a minute (0: kept for ever, bounded only by the memory budget).
    dead_letter_max_age_s: int = DEFAULT_MAX_AGE_S
    socket_timeout_s: float = 5.0
    # Stream-state reads at scrape time give up after this; they never fail a scrape.
    state_timeout_s: float = 0.5
    log_level: str = "INFO"
    # The console (/ui/, dispatcher/console): operators may act, viewers only look.
    # Its session cookie is signed with the secret key; without one it is off, except
    # on loopback (a random key per process). See docs/console.md.
    operator_tokens: tuple[str, ...] = ()
    viewer_tokens: tuple[str, ...] = ()
    console_secret_key: str | None = None
    # The consumers' CLAIM_IDLE_MS: the console marks pending entries past it claimable.
    claim_idle_ms: int = 30_000
    # A 202 only once WAIT confirms the request's writes on this many replicas, within
    # the timeout (else 503: written on the master, may or may not survive a failover).
    # 0: answered once the master has them (replication is asynchronous).
    min_replicas_acked: int = 0
    replica_ack_timeout_ms: int = 1000

    @property
    def replicas(self) -> Replicas | None:
        """What a write waits for before its 202 (None: the master alone)."""
        if not self.min_replicas_acked:
            return None
        return Replicas(self.min_replicas_acked, self.replica_ack_timeout_ms)


def from_env(env: Mapping[str, str]) -> Settings:
    """Build Settings from environment variables; a bad value raises SettingsError."""
    d = Settings()
    settings = Settings(
        redis=redis_from_env(env),
        queue=queue_from_env(env),
        host=text(env, "HOST", d.host),
        port=number(env, "PORT", int, d.port, 1, 65535),
        http_workers=number(env, "HTTP_WORKERS", int, d.http_workers, 1, 64),
        front_door=_front_door(env),
        tokens=_tokens(env),
        allow_anonymous=bool(flag(env, "DISPATCH_ALLOW_ANONYMOUS", False)),
        max_messages=number(env, "MAX_MESSAGES", int, d.max_messages, 1),
        max_body_bytes=number(env, "MAX_BODY_BYTES", int, d.max_body_bytes, 1),
        max_payload_bytes=number(env, "MAX_PAYLOAD_BYTES", int, d.max_payload_bytes, 2),
        max_payload_depth=number(env, "MAX_PAYLOAD_DEPTH", int, d.max_payload_depth, 1),
        max_json_values=number(env, "MAX_JSON_VALUES", int, d.max_json_values, 10),
        max_pacing_s=number(env, "MAX_PACING_S", float, d.max_pacing_s, 0),
        max_paced_requests=number(
            env, "MAX_PACED_REQUESTS", int, d.max_paced_requests, 1
        ),
        max_countdown_s=number(env, "MAX_COUNTDOWN_S", float, d.max_countdown_s, 1),
        max_backlog=number(env, "MAX_BACKLOG", int, d.max_backlog, 1),
        idempotency_ttl_s=number(env, "IDEMPOTENCY_TTL_S", int, d.idempotency_ttl_s, 1),
        lookups_per_minute=number(
            env, "LOOKUPS_PER_MINUTE", int, d.lookups_per_minute, 1
        ),
        memory_budget_bytes=number(
            env, "MEMORY_BUDGET_BYTES", int, d.memory_budget_bytes, 0
        ),
        memory_budget_ratio=number(
            env, "MEMORY_BUDGET_RATIO", float, d.memory_budget_ratio, 0.05, 1.0
        ),
        dead_letter_max_age_s=number(
            env, "DEAD_LETTER_MAX_AGE_S", int, d.dead_letter_max_age_s, 0
        ),
        socket_timeout_s=number(
            env, "SOCKET_TIMEOUT_S", float, d.socket_timeout_s, 0.1
        ),
        state_timeout_s=number(env, "STATE_TIMEOUT_S", float, d.state_timeout_s, 0.01),
        log_level=log_level(env, d.log_level),
        operator_tokens=_tokens(env, "OPERATOR_TOKENS"),
        viewer_tokens=_tokens(env, "VIEWER_TOKENS"),
        console_secret_key=_secret_key(env),
        claim_idle_ms=number(env, "CLAIM_IDLE_MS", int, d.claim_idle_ms, 1),
        min_replicas_acked=number(
            env, "MIN_REPLICAS_ACKED", int, d.min_replicas_acked, 0, 100
        ),
        replica_ack_timeout_ms=number(
            env, "REPLICA_ACK_TIMEOUT_MS", int, d.replica_ack_timeout_ms, 1, 60_000
        ),
    )
    _check_access(settings)
    _check_console_tokens(settings)
    _check_replicas(settings)
    return settings


def _check_replicas(settings: Settings) -> None:
    """WAIT must answer before the socket gives up on it. (On a Redis Cluster each
    partition's write waits on the connection to its own master.)"""
    if not settings.min_replicas_acked:
        return
    if settings.replica_ack_timeout_ms >= settings.socket_timeout_s * 1000:
        raise SettingsError(
            f"REPLICA_ACK_TIMEOUT_MS ({settings.replica_ack_timeout_ms}) must be under "
            f"SOCKET_TIMEOUT_S ({settings.socket_timeout_s:g} s): a longer WAIT would "
            "end as a socket timeout"
        )


def _front_door(env: Mapping[str, str]) -> FrontDoor:
    d = FrontDoor()
    return FrontDoor(
        worker_connections=number(
            env, "WORKER_CONNECTIONS", int, d.worker_connections, 10, 100_000
        ),
        header_timeout_s=number(
            env, "HEADER_TIMEOUT_S", int, d.header_timeout_s, 1, 300
        ),
        body_timeout_s=number(env, "BODY_TIMEOUT_S", float, d.body_timeout_s, 0.1),
    )


def graceful_timeout_s(settings: Settings) -> int:
    """How long gunicorn lets requests in progress finish on shutdown: the longest a
    request runs. After its first write a paced one starts none past MAX_PACING_S from
    its start (its body, bounded by BODY_TIMEOUT_S, included); then the write in
    flight ends within SOCKET_TIMEOUT_S; 5 s more to answer."""
    longest_s = max(settings.max_pacing_s, settings.front_door.body_timeout_s)
    return math.ceil(longest_s + settings.socket_timeout_s) + 5


def _check_access(settings: Settings) -> None:
    """Without tokens the dispatcher refuses to start, unless told to run open, which
    it does on loopback only and never beside tokens (a mix that would switch the
    tokens off silently)."""
    if settings.allow_anonymous and settings.tokens:
        raise SettingsError(
            "DISPATCH_ALLOW_ANONYMOUS=1 switches tokens off: unset it, or unset "
            "DISPATCH_TOKENS(_FILE)"
        )
    if settings.tokens:
        return
    if not settings.allow_anonymous:
        raise SettingsError(
            "DISPATCH_TOKENS or DISPATCH_TOKENS_FILE must give at least one token "
            "(or set DISPATCH_ALLOW_ANONYMOUS=1 for a local run on loopback)"
        )
    if settings.host not in LOOPBACK:
        raise SettingsError(
            f"DISPATCH_ALLOW_ANONYMOUS=1 needs HOST on loopback "
            f"({', '.join(LOOPBACK)}), got {settings.host!r}"
        )


def _tokens(env: Mapping[str, str], name: str = "DISPATCH_TOKENS") -> tuple[str, ...]:
    """NAME (comma-separated) or NAME_FILE (one a line)."""
    tokens = secret_lines(env, name)
    if any(len(token) < MIN_TOKEN_LENGTH for token in tokens):
        # Never print a token, not even a weak one.
        shown = f"{name}_FILE" if env.get(f"{name}_FILE") else name
        raise SettingsError(
            f"{shown}: every token needs {MIN_TOKEN_LENGTH}+ characters"
        )
    return tuple(tokens)


def _secret_key(env: Mapping[str, str]) -> str | None:
    key = secret(env, "CONSOLE_SECRET_KEY")
    if key is not None and len(key) < MIN_SECRET_KEY_LENGTH:
        raise SettingsError(
            f"CONSOLE_SECRET_KEY(_FILE) needs {MIN_SECRET_KEY_LENGTH}+ characters"
        )
    return key


def _check_console_tokens(settings: Settings) -> None:
    """A token opens one door: a client's token never opens the console, and a
    person is an operator or a viewer, not both."""
    lists = {
        "DISPATCH_TOKENS": settings.tokens,
        "OPERATOR_TOKENS": settings.operator_tokens,
        "VIEWER_TOKENS": settings.viewer_tokens,
    }
    seen: dict[str, str] = {}
    for name, tokens in lists.items():
        for token in tokens:
            if seen.setdefault(token, name) != name:
                raise SettingsError(
                    f"a token is in both {seen[token]} and {name}: give each its own"
                )
