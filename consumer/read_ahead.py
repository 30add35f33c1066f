"""Read-ahead: the next XREADGROUP, sent before the batch in hand runs, so Redis
serves it while this process works instead of while it waits. Its reply is read halfway
through the batch (by then Redis has answered); from then its entries are held like the
batch's: the heartbeat renews their claims, and a stop hands them back at once.

Only for tiny tasks (the adaptive count at READ_AHEAD_FROM or more: at least that many
entries fit in consumer.batching's TARGET_BATCH_S, so each takes under half a
millisecond), where the read is a large share of an entry's cost and Redis can do it on
the other core: one consumer drained about a third faster (docs/performance.md). A
consumer then holds up to two batches: the one it runs and the one read ahead, whose
entries wait about TARGET_BATCH_S more. Slow tasks (a small count) and an explicit
BATCH_SIZE are read as before, one batch at a time.

The read goes on a connection of its own, taken from the client's pool for as long as
its reply is outstanding (the acks go on others meanwhile). Without BLOCK: when the
stream is empty the answer is wanted at once, and the next read waits as usual. Not on
a Redis Cluster client (no single pool): there each read waits as before.

Nothing is lost if the reply never arrives (a lost connection, a crash): its entries
are pending under this consumer and any consumer's XAUTOCLAIM takes them after
CLAIM_IDLE_MS, as with a crash mid-batch.
"""

import time
from typing import Any

import redis
from redis.connection import ConnectionPool

from pipeline_core.connection import Client

# The least COUNT read ahead (see above): 100 entries in 50 ms, 0.5 ms an entry.
READ_AHEAD_FROM = 100


class ReadAhead:
    """Commands sent, their replies unread, on a connection of its own."""

    def __init__(self, client: Client) -> None:
        pool = getattr(client, "connection_pool", None)
        # A cluster's client has no single pool; a Redis or Sentinel client has.
        self.pool: ConnectionPool | None = (
            pool if isinstance(client, redis.Redis) else None
        )
        self._connection: Any = None
        self._replies = 0
        self.sent_s = 0.0  # monotonic: when the outstanding read was sent

    @property
    def possible(self) -> bool:
        return self.pool is not None

    @property
    def outstanding(self) -> bool:
        return self._connection is not None

    def send(self, *commands: tuple[Any, ...]) -> None:
        """Send the commands (each a tuple of arguments), not waiting for replies."""
        if self.pool is None or self._connection is not None:
            raise RuntimeError("read-ahead impossible or already outstanding")
        connection: Any = self.pool.get_connection()  # redis-py's methods: untyped
        try:
            connection.send_packed_command(connection.pack_commands(commands))
        except BaseException:
            self._give_back(connection, broken=True)
            raise
        self._connection, self._replies = connection, len(commands)
        self.sent_s = time.monotonic()

    def collect(self) -> list[Any]:
        """The replies, as Redis sent them (an error reply raises, and the connection
        is dropped with whatever it still had to say)."""
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("no read-ahead outstanding")
        try:
            replies = [connection.read_response() for _ in range(self._replies)]
        except BaseException:
            self._give_back(connection, broken=True)
            raise
        self._give_back(connection, broken=False)
        return replies

    def drop(self) -> None:
        """Forget the outstanding read (after a failure): its connection is closed;
        its entries, if Redis delivered any, are reclaimed after CLAIM_IDLE_MS."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._give_back(connection, broken=True)

    def _give_back(self, connection: Any, broken: bool) -> None:
        if broken:
            connection.disconnect()
        if self.pool is not None:
            self.pool.release(connection)
