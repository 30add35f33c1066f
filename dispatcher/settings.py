"""Dispatcher settings: a frozen dataclass filled from the environment at start."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from dispatcher.errors import SettingsError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MIN_TOKEN_LENGTH = 16
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
    host: str = "0.0.0.0"  # all interfaces: what a container behind a Service needs
    port: int = 8000
    threads: int = 8
    # gunicorn worker processes. Above 1, metrics use prometheus_client's multiprocess
    # mode (files in PROMETHEUS_MULTIPROC_DIR, wiped at start).
    http_workers: int = 1
    # Bearer tokens accepted on /dispatch and /results; rotate by listing old and new.
    tokens: tuple[str, ...] = ()
    allow_anonymous: bool = False  # only ever on loopback (make run)
    max_messages: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_payload_bytes: int = 64 * 1024  # one payload, encoded
    max_payload_depth: int = 32  # nesting of objects and lists in one payload
    max_pacing_s: float = 60.0
    # Refuse new work (429) while the group has this many entries still to finish.
    max_backlog: int = 1_000_000
    socket_timeout_s: float = 5.0
    # Stream-state reads at scrape time give up after this; they never fail a scrape.
    state_timeout_s: float = 0.5
    log_level: str = "INFO"


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
        host=_text(env, "HOST", d.host),
        port=_number(env, "PORT", int, d.port, 1, 65535),
        threads=_number(env, "THREADS", int, d.threads, 1, 256),
        http_workers=_number(env, "HTTP_WORKERS", int, d.http_workers, 1, 64),
        tokens=_tokens(env),
        allow_anonymous=env.get("DISPATCH_ALLOW_ANONYMOUS", "") in ("1", "true", "yes"),
        max_messages=_number(env, "MAX_MESSAGES", int, d.max_messages, 1),
        max_body_bytes=_number(env, "MAX_BODY_BYTES", int, d.max_body_bytes, 1),
        max_payload_bytes=_number(
            env, "MAX_PAYLOAD_BYTES", int, d.max_payload_bytes, 2
        ),
        max_payload_depth=_number(
            env, "MAX_PAYLOAD_DEPTH", int, d.max_payload_depth, 1
        ),
        max_pacing_s=_number(env, "MAX_PACING_S", float, d.max_pacing_s, 0),
        max_backlog=_number(env, "MAX_BACKLOG", int, d.max_backlog, 1),
        socket_timeout_s=_number(
            env, "SOCKET_TIMEOUT_S", float, d.socket_timeout_s, 0.1
        ),
        state_timeout_s=_number(env, "STATE_TIMEOUT_S", float, d.state_timeout_s, 0.01),
        log_level=_log_level(env, d.log_level),
    )
    _check_access(settings)
    return settings


def _check_access(settings: Settings) -> None:
    """Without tokens the dispatcher refuses to start, unless told to run open, which
    it does on loopback only."""
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


def _tokens(env: Mapping[str, str]) -> tuple[str, ...]:
    """DISPATCH_TOKENS (comma-separated) or DISPATCH_TOKENS_FILE (one a line)."""
    path = env.get("DISPATCH_TOKENS_FILE")
    if path:
        text = _read(path, "DISPATCH_TOKENS_FILE")
        tokens = [line.strip() for line in text.splitlines()]
        name = "DISPATCH_TOKENS_FILE"
    else:
        tokens = [token.strip() for token in env.get("DISPATCH_TOKENS", "").split(",")]
        name = "DISPATCH_TOKENS"
    tokens = [token for token in tokens if token and not token.startswith("#")]
    if any(len(token) < MIN_TOKEN_LENGTH for token in tokens):
        # Never print a token, not even a weak one.
        raise SettingsError(f"{name}: every token needs {MIN_TOKEN_LENGTH}+ characters")
    return tuple(tokens)


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
    return _read(path, f"{name}_FILE").strip() or None


def _read(path: str, name: str) -> str:
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read()
    except OSError as error:
        raise SettingsError(f"{name}: cannot read {path!r}: {error.strerror}") from None
