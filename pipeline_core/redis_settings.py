"""The Redis settings every process shares (REDIS_URL and the rest), read once from the
environment and checked: what `connect()` (pipeline_core/connection.py) is given."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline_core.env import SettingsError, flag, optional, secret, text

SENTINELS_RULE = "must be host:port pairs separated by commas"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = "redis://localhost:6379/0"
    username: str | None = None
    password: str | None = None
    # TLS (rediss:// URLs): the CA that signed Redis's certificate, and a client
    # certificate and key when Redis asks for one (tls-auth-clients).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cluster: bool | None = None  # None: ask Redis at start (INFO cluster)
    # Redis Sentinel: the master monitored as `sentinel_master`, found through these
    # Sentinels (then REDIS_URL's host and port are not used; its scheme, credentials
    # and database are), which may ask for a password of their own.
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = None


def redis_from_env(env: Mapping[str, str]) -> RedisSettings:
    """REDIS_URL, REDIS_USERNAME, REDIS_PASSWORD(_FILE), REDIS_CA_FILE,
    REDIS_CERT_FILE, REDIS_KEY_FILE, REDIS_CLUSTER (1, 0, or unset: detect) and
    REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD(_FILE)."""
    settings = RedisSettings(
        url=text(env, "REDIS_URL", RedisSettings().url),
        username=optional(env, "REDIS_USERNAME"),
        password=secret(env, "REDIS_PASSWORD"),
        ca_file=optional(env, "REDIS_CA_FILE"),
        cert_file=optional(env, "REDIS_CERT_FILE"),
        key_file=optional(env, "REDIS_KEY_FILE"),
        cluster=flag(env, "REDIS_CLUSTER"),
        sentinels=_sentinels(optional(env, "REDIS_SENTINELS") or ""),
        sentinel_master=optional(env, "REDIS_SENTINEL_MASTER"),
        sentinel_password=secret(env, "REDIS_SENTINEL_PASSWORD"),
    )
    return _checked_sentinel(settings)


def _sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port`; an IPv6 host in brackets (`[::1]:26379`)."""
    if not raw.strip():
        return ()
    found = []
    for item in raw.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SettingsError(f"REDIS_SENTINELS {SENTINELS_RULE}, got {raw!r}")
        found.append((host, int(port)))
    return tuple(found)


def _checked_sentinel(settings: RedisSettings) -> RedisSettings:
    """Sentinel needs the master's name, never goes with a cluster, and is not a
    cluster (so nothing asks Redis whether it is one)."""
    if not settings.sentinels:
        if settings.sentinel_master or settings.sentinel_password:
            raise SettingsError(
                "REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD need REDIS_SENTINELS"
                " (the Sentinels to ask for the master)"
            )
        return settings
    if not settings.sentinel_master:
        raise SettingsError(
            "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER (the name the Sentinels "
            "monitor the master under)"
        )
    if settings.cluster:
        raise SettingsError(
            "REDIS_CLUSTER=1 cannot go with REDIS_SENTINELS: a Redis Cluster fails "
            "over by itself, Sentinel watches a single master; unset one of them"
        )
    return dataclasses.replace(settings, cluster=False)
