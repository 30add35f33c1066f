"""The Redis settings every process shares, and the one way to connect.

Each service passes its own retry policy: the dispatcher never retries a command (a
retried XADD whose reply was lost would write its batch twice), the consumer retries
single commands briefly. A Redis Cluster is detected at start (`INFO cluster`) unless
REDIS_CLUSTER says; then redis-py's cluster client routes every command by key. With
REDIS_SENTINELS the master comes from Redis Sentinel (redis-py's `master_for`): each
new connection asks the Sentinels where the master is, so a failover is followed
without a restart (a connection to the old master fails, the next finds the new one).
"""

import dataclasses
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from pipeline_core.env import SettingsError, flag, optional, secret, text
from pipeline_core.keys import Queue, check_cluster_slots

log = logging.getLogger(__name__)

Client: TypeAlias = redis.Redis | RedisCluster
NO_RETRY = Retry(NoBackoff(), 0)
# Entry fields are UTF-8 text. Bytes that are not (written by another producer) are
# decoded with surrogate escapes instead of failing the whole reply: the entry can
# then be dead-lettered, and written back byte for byte.
ENCODING_ERRORS = "surrogateescape"
# A Sentinel answers at once or not at all: past this, the next one is asked.
SENTINEL_TIMEOUT_S = 2.0
SENTINELS_RULE = "must be host:port pairs separated by commas"
# Replies redis-py would convert entry by entry (XREADGROUP: a tuple and a dict each,
# which the consumer then converted again into its Messages): on our clients they come
# as Redis sent them, parsed once by their reader (consumer/message.py's to_messages).
# A cluster's node clients still convert them: that parser takes both forms.
AS_SENT = ("XREADGROUP",)


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


def connect(
    settings: RedisSettings,
    *,
    socket_timeout_s: float,
    retry: Retry = NO_RETRY,
    client_name: str | None = None,
    connect_timeout_s: float | None = None,
    queue: Queue | None = None,
) -> Client:
    """A decoding client for a single Redis, the master Sentinel names, or a Redis
    Cluster (see is_cluster). On a cluster, the queue's keys must share one slot
    (SettingsError otherwise). Its AS_SENT replies come unconverted."""
    options = _options(settings, socket_timeout_s, client_name, connect_timeout_s)
    if settings.sentinels:
        return replies_as_sent(_sentinel_master(settings, options, retry))
    if is_cluster(settings, options):
        if queue is not None:
            check_cluster_slots(queue)
        return RedisCluster.from_url(settings.url, retry=retry, **options)
    return replies_as_sent(
        redis.Redis.from_url(
            settings.url,
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **options,
        )
    )


def replies_as_sent(client: redis.Redis) -> redis.Redis:
    """The client, its AS_SENT commands' replies no longer converted by redis-py (its
    callbacks are its own: other clients keep theirs)."""
    for command in AS_SENT:
        client.set_response_callback(command, _as_sent)
    return client


def _as_sent(response: object, **options: object) -> object:
    return response


def is_cluster(settings: RedisSettings, options: dict[str, Any]) -> bool:
    """REDIS_CLUSTER when set; else what the node at REDIS_URL says. A node that is
    down raises (the caller decides whether to wait or guess); a user not allowed INFO
    is taken for a single Redis, with a warning naming REDIS_CLUSTER."""
    if settings.cluster is not None:
        return settings.cluster
    try:
        with redis.Redis.from_url(settings.url, **options) as probe:
            return bool(probe.info("cluster").get("cluster_enabled"))
    except redis.exceptions.NoPermissionError:
        log.warning(
            "cannot ask redis whether it is a cluster (INFO refused); assuming not: "
            "set REDIS_CLUSTER"
        )
        return False


def _sentinel_master(
    settings: RedisSettings, options: dict[str, Any], retry: Retry
) -> redis.Redis:
    """A client of the master the Sentinels name. REDIS_URL gives the database, TLS
    (rediss://) and its credentials (the URL's win, as with from_url); the Sentinels
    get the same TLS settings and a password of their own."""
    tls = settings.url.startswith("rediss://")
    from_url = redis.connection.parse_url(settings.url)
    master_options = options | {
        key: from_url[key] for key in ("username", "password", "db") if key in from_url
    }
    sentinel_options = {
        key: value
        for key, value in options.items()
        if key.startswith(("ssl_", "socket_"))
    }
    sentinel_options |= {
        "password": settings.sentinel_password,
        "ssl": tls,
        "socket_timeout": min(options["socket_timeout"], SENTINEL_TIMEOUT_S),
    }
    sentinels = Sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_options)
    master: redis.Redis = sentinels.master_for(
        settings.sentinel_master,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        ssl=tls,
        **master_options,
    )
    return master


def describe(settings: RedisSettings) -> str:
    """Where Redis is, for logs and errors: the URL without credentials, or the
    master's name and its Sentinels."""
    if not settings.sentinels:
        return redacted(settings.url)
    addresses = ",".join(f"{host}:{port}" for host, port in settings.sentinels)
    return f"master {settings.sentinel_master!r} via Sentinels {addresses}"


def redacted(url: str) -> str:
    """A Redis URL without its user and password, fit for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, where, parts.path, "", ""))


def queue_node(client: Client, queue: Queue) -> redis.Redis:
    """The client of the one node that holds the queue: the client itself, or on a
    cluster, the master of the stream's slot (for INFO, CONFIG GET and the like)."""
    if not isinstance(client, RedisCluster):
        return client
    node = client.get_node_from_key(queue.stream)
    if node is None or node.redis_connection is None:
        raise redis.ConnectionError(f"no cluster node holds {queue.stream!r}")
    connection: redis.Redis = node.redis_connection
    return connection


def redis_now_ms(client: Client, queue: Queue) -> int:
    """Redis's clock (TIME on the queue's node: TIME names no key, so a cluster
    pipeline refuses it), in Unix milliseconds: what due times are measured by."""
    seconds, micros = queue_node(client, queue).time()
    return int(seconds) * 1000 + int(micros) // 1000


def answers(settings: RedisSettings) -> bool:
    """Whether the node at REDIS_URL answers PING now (2 s at most). A refused
    password is not an outage: it raises."""
    try:
        with redis.Redis.from_url(
            settings.url, **_options(settings, 2.0, None, 2.0)
        ) as probe:
            return bool(probe.ping())
    except redis.AuthenticationError:
        raise
    except redis.RedisError:
        return False


def _options(
    settings: RedisSettings,
    socket_timeout_s: float,
    client_name: str | None,
    connect_timeout_s: float | None,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "username": settings.username,
        "password": settings.password,
        "decode_responses": True,
        "encoding_errors": ENCODING_ERRORS,
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s or min(socket_timeout_s, 5.0),
        "client_name": client_name,  # CLIENT LIST shows who is who
    }
    if settings.url.startswith("rediss://"):  # certificates for TLS
        options |= {
            "ssl_ca_certs": settings.ca_file,
            "ssl_certfile": settings.cert_file,
            "ssl_keyfile": settings.key_file,
        }
    return options
