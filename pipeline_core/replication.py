"""Writes confirmed on replicas: WAIT after the write, on the connection that wrote it.

WAIT n ms counts the replicas that have received every write *of its own connection*
(Redis remembers each connection's last write offset), so it must follow the write on
the same connection: a WAIT sent on another pooled connection would measure that
connection's older writes and could confirm what is not replicated. Here the write (a
MULTI/EXEC of XADDs, or one script call) and WAIT go in one pipeline, which redis-py
sends on one connection, in one round trip. The dispatcher and Python's Sender wait
(neither retries a command, so a write is never sent twice to be waited for).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

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
) -> tuple[list[Any], int]:
    """Run the writes `queue_writes` puts on a pipeline (inside MULTI/EXEC when
    `transaction`), then WAIT, on one connection. Returns the writes' replies and how
    many replicas confirmed them; a Redis error in any reply is raised (a refused
    MULTI runs none of its commands)."""
    with single_node(client).pipeline(transaction=False) as pipe:
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
    return written, int(acked)


def _raise_first_error(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def single_node(client: Client) -> redis.Redis:
    """The client WAIT can follow a write on: a single node's (Sentinel's master's).
    A Redis Cluster's writes may go to several masters (refused at start)."""
    if isinstance(client, redis.Redis):
        return client
    raise TypeError("MIN_REPLICAS_ACKED needs a single master (Sentinel or not)")


def one_connection(client: Client) -> redis.Redis:
    """A client bound to one connection of `client`'s pool (given back on close): for
    writes sent one by one that one WAIT must follow (a paced dispatch)."""
    pool = single_node(client).connection_pool
    return redis.Redis(connection_pool=pool, single_connection_client=True)
