"""The one way to connect, with the Redis settings every process shares
(pipeline_core/redis_settings.py).

Each service passes its own retry policy: the dispatcher never retries a command (a
retried XADD whose reply was lost would write its batch twice), the consumer retries
single commands briefly. A Redis Cluster is detected at start (`INFO cluster`) unless
REDIS_CLUSTER says; then redis-py's cluster client routes every command by key. With
REDIS_SENTINELS the master comes from Redis Sentinel (redis-py's `master_for`): each
new connection asks the Sentinels where the master is, so a failover is followed
without a restart (a connection to the old master fails, the next finds the new one).
"""

import logging
import urllib.parse
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from pipeline_core.keys import Queue, check_cluster_slots
from pipeline_core.redis_settings import RedisSettings

log = logging.getLogger(__name__)

Client: TypeAlias = redis.Redis | RedisCluster
NO_RETRY = Retry(NoBackoff(), 0)
# Entry fields are UTF-8 text. Bytes that are not (written by another producer) are
# decoded with surrogate escapes instead of failing the whole reply: the entry can
# then be dead-lettered, and written back byte for byte.
ENCODING_ERRORS = "surrogateescape"
# A Sentinel answers at once or not at all: past this, the next one is asked.
SENTINEL_TIMEOUT_S = 2.0
# Replies redis-py would convert entry by entry (XREADGROUP: a tuple and a dict each,
# which the consumer then converted again into its Messages): on our clients they come
# as Redis sent them, parsed once by their reader (consumer/message.py's to_messages).
# A cluster's node clients still convert them: that parser takes both forms.
AS_SENT = ("XREADGROUP",)


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
