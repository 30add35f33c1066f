"""Writes confirmed on replicas: WAIT after the write, on the connection that wrote it.

WAIT n ms counts the replicas that have received every write *of its own connection*
(Redis remembers each connection's last write offset), so it must follow the write on
the same connection: a WAIT sent on another pooled connection would measure that
connection's older writes and could confirm what is not replicated. Here the write (a
MULTI/EXEC of XADDs, or one script call) and WAIT go in one pipeline, which redis-py
sends on one connection, in one round trip. The dispatcher and Python's Sender wait
(neither retries a command, so a write is never sent twice to be waited for).

On a Redis Cluster the pipeline goes to the master that serves the written key's slot
(one partition's keys share a slot), on that node's own connection pool: WAIT counts
that master's replicas. A slot that moved answers MOVED, which is then a failed write
like any other (503), and the cluster client learns the slot's new master for the next.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from pipeline_core.connection import Client


@dataclass(frozen=True, slots=True)
class Replicas:
    """How many replicas must confirm a write (WAIT's numreplicas), within how long."""

    count: int
    timeout_ms: int

    def check(self, acked: int, entry_ids: list[str]) -> None:
        """NotReplicatedError unless `acked` replicas (WAIT's answer) are enough."""
        if acked < self.count:
            raise NotReplicatedError(entry_ids, acked, self.count)


class NotReplicatedError(Exception):
    """The write is on the master, but WAIT confirmed it on fewer replicas than asked
    within its timeout: it may or may not survive a failover (HTTP's 503)."""

    def __init__(self, entry_ids: list[str], acked: int, wanted: int) -> None:
        super().__init__(f"{acked} of {wanted} replicas confirmed the write in time")
        self.entry_ids, self.acked, self.wanted = entry_ids, acked, wanted


def write_then_wait(
    client: Client,
    queue_writes: Callable[[Pipeline], object],
    replicas: Replicas,
    transaction: bool = True,
    *,
    key: str,
) -> tuple[list[Any], int]:
    """Run the writes `queue_writes` puts on a pipeline (inside MULTI/EXEC when
    `transaction`), then WAIT, on one connection to the master of `key` (the one a
    single Redis or Sentinel gives, or on a cluster the one serving key's slot).
    Returns the writes' replies and how many replicas confirmed them; a Redis error
    in any reply is raised (a refused MULTI runs none of its commands)."""
    try:
        with node_of(client, key).pipeline(transaction=False) as pipe:
            if transaction:
                pipe.execute_command("MULTI")
            queue_writes(pipe)
            if transaction:
                pipe.execute_command("EXEC")
            pipe.wait(replicas.count, replicas.timeout_ms)
            replies = pipe.execute(raise_on_error=False)
        *written, acked = replies
        if transaction:  # MULTI's OK, QUEUED per command, then EXEC's list of replies
            written = written[-1] if isinstance(written[-1], list) else written
        _raise_first_error([*replies, *written])
    except redis.RedisError:
        relearn(client, key)
        raise
    return written, int(acked)


def _raise_first_error(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def node_of(client: Client, key: str) -> redis.Redis:
    """The client WAIT can follow a write of `key` on: a single node's (Sentinel's
    master's), or on a cluster that of the master serving key's slot, as the cluster
    client last learnt it (a slot no master serves is a cluster outage)."""
    if not isinstance(client, RedisCluster):
        return client
    try:
        node = client.get_node_from_key(key)
    except RedisClusterException as error:  # not a RedisError: a 503 all the same
        raise redis.exceptions.ClusterError(str(error)) from error
    connection: redis.Redis = client.get_redis_connection(node)
    return connection


def relearn(client: Client, key: str) -> None:
    """After a write to a cluster node failed, one command on the key through the
    cluster client: it follows a MOVED (and learns the slot's new master) or, after a
    lost connection, reads the cluster's slots again, so the next write goes to the
    right master. Its own failure changes nothing: the write already failed."""
    if not isinstance(client, RedisCluster):
        return
    try:
        client.exists(key)
    except (redis.RedisError, RedisClusterException):
        return


def one_connection(client: Client, key: str) -> redis.Redis:
    """A client bound to one connection of the pool of `key`'s master (given back on
    close): for writes sent one by one that one WAIT must follow (a paced dispatch)."""
    pool = node_of(client, key).connection_pool
    return redis.Redis(connection_pool=pool, single_connection_client=True)
