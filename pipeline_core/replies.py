"""Redis's error replies (and lost connections), named from a closed set, once, for
logs, metrics labels and HTTP answers: each process acts on the reason, not the text."""

import redis

# reason -> what it means, in words fit for a log line or an HTTP answer
REASONS = {
    "connection": "redis unreachable",
    "timeout": "redis did not answer in time",
    "oom": "redis is out of memory (maxmemory reached)",
    "misconf": "redis refuses writes: persisting to disk failed (MISCONF)",
    "readonly": "redis refuses writes: it is a read-only replica",
    "loading": "redis is loading its data",
    "noperm": "the redis user lacks a permission",
    "nogroup": "the consumer group or the stream is gone",
    "unblocked": "the stream was deleted under a blocked read",
    "cluster": "the redis cluster is changing or down",
    "other": "redis answered with an error",
}
PREFIXES = {
    "OOM": "oom", "MISCONF": "misconf", "READONLY": "readonly", "LOADING": "loading",
    "NOPERM": "noperm", "NOGROUP": "nogroup", "UNBLOCKED": "unblocked",
    "CLUSTERDOWN": "cluster", "MOVED": "cluster", "ASK": "cluster",
    "TRYAGAIN": "cluster", "MASTERDOWN": "cluster",
}  # fmt: skip
# Classes redis-py raises for some replies; checked in order (subclasses first). The
# cluster's redirections and refusals lose their prefix in redis-py's message (a MOVED
# reads "3999 127.0.0.1:7001"): they are known by class. MOVED is an AskError,
# MASTERDOWN a ClusterDownError (a ClusterError).
CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (redis.exceptions.BusyLoadingError, "loading"),
    (redis.ConnectionError, "connection"),
    (redis.TimeoutError, "timeout"),
    (redis.exceptions.RedisClusterException, "cluster"),
    (redis.exceptions.ClusterError, "cluster"),
    (redis.exceptions.AskError, "cluster"),
    (redis.exceptions.TryAgainError, "cluster"),
    (redis.exceptions.OutOfMemoryError, "oom"),
    (redis.exceptions.NoPermissionError, "noperm"),
    (redis.exceptions.ReadOnlyError, "readonly"),
)


# What a Redis call raises when Redis fails: the cluster client's SlotNotCoveredError
# (no node serves the slot, in the middle of a failover or a resharding) is no
# RedisError. Every loop that outlives outages catches these.
FAILURES: tuple[type[Exception], ...] = (
    redis.RedisError,
    redis.exceptions.RedisClusterException,
)


def reason(error: Exception) -> str:
    """The reason for a failed command: one key of REASONS."""
    for kind, name in CLASSES:
        if isinstance(error, kind):
            return name
    text = str(error)
    # redis-py prefixes the error of a pipeline's command with where it happened
    if text.startswith("Command # ") and " caused error: " in text:
        text = text.split(" caused error: ", 1)[1]
    return PREFIXES.get(text.split(" ", 1)[0].upper(), "other")
