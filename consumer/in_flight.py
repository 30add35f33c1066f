"""Commands in flight: sent now, their replies read later, so Redis works while this
process does instead of while it waits. Two uses, both only for tiny tasks (the adaptive
count at READ_AHEAD_FROM or more: at least that many entries fit in consumer.batching's
TARGET_BATCH_S, so each takes under half a millisecond), where waiting for Redis is a
large share of an entry's cost and Redis can work on the other core:

- Read-ahead (consumer.reader): the next XREADGROUP, sent before the batch in hand runs.
  From halfway through the batch its reply is taken as soon as it has arrived (looked
  for every TAKE_EVERY entries, never waited for), at the latest when the batch ends;
  from then its entries are held like the batch's: the heartbeat renews their claims,
  and a stop hands them back at once. A consumer then holds up to two batches: the one
  it runs and the one read ahead, whose entries wait about TARGET_BATCH_S more.
- Ack-ahead (consumer.outcomes): a batch's results and XACK (one MULTI/EXEC), sent when
  the batch ends, their replies taken the same way during the next one (at the latest
  before the next ack, before any read that may wait, and on stop). Its entries are
  let go at the send.

Why not wait at halfway: on a machine that Redis shares with busy consumers (two
consumers and Redis on two cores), Redis answers a batch's commands several
milliseconds late, later than half a batch; a consumer that waited then idled for a
fifth of its time (docs/performance.md).

Slow tasks (a small count) and an explicit BATCH_SIZE go one batch at a time, each
command waited for, as before. Each use has a connection of its own, taken from the
client's pool while its replies are outstanding. Not on a Redis Cluster client (no
single pool): there every command is waited for.

Nothing is lost if a reply never arrives (a lost connection, a crash): the entries read
ahead, or whose ack was not applied, are pending under this consumer and any
consumer's XAUTOCLAIM takes them after CLAIM_IDLE_MS, as with a crash mid-batch (an
entry whose ack was lost runs again: what a crash re-runs, docs/guarantees.md).
"""

import time
from typing import Any

import hiredis
import redis
from redis.connection import ConnectionPool

from pipeline_core.connection import Client

# The least COUNT read ahead (see above): 100 entries in 50 ms, 0.5 ms an entry.
READ_AHEAD_FROM = 100
# From halfway through a batch, how many entries apart its worker looks for the replies
# in flight (a look that finds none costs a system call or two: a few microseconds).
TAKE_EVERY = 32


class InFlight:
    """Commands sent, their replies unread, on a connection of its own."""

    def __init__(self, client: Client) -> None:
        # A cluster's client has no single pool; a Redis or Sentinel client has.
        self.pool: ConnectionPool | None = (
            client.connection_pool if isinstance(client, redis.Redis) else None
        )
        self._connection: Any = None
        self._replies = 0
        self._early: list[Any] = []  # the replies arrived() read, for collect()
        self.sent_s = 0.0  # monotonic: when the commands in flight were sent

    @property
    def possible(self) -> bool:
        return self.pool is not None

    @property
    def outstanding(self) -> bool:
        return self._connection is not None

    def arrived(self) -> bool:
        """Whether every reply has arrived. Never waits: the replies that are complete
        are read now (a part of one stays in the parser's buffer), and collect() then
        returns them at once."""
        connection, early = self._connection, self._early
        if connection is None:
            return False
        while len(early) < self._replies:
            try:
                early.append(_reply(connection, waiting=False))
            except redis.TimeoutError:  # nothing more to read yet
                return False
        return True

    def send(self, *commands: tuple[Any, ...]) -> None:
        """Send the commands (each a tuple of arguments), not waiting for replies."""
        if self.pool is None or self._connection is not None:
            raise RuntimeError("impossible here, or already in flight")
        connection: Any = self.pool.get_connection()  # redis-py's methods: untyped
        try:
            connection.send_packed_command(_packed(connection, commands))
        except BaseException:
            self._give_back(connection, broken=True)
            raise
        self._connection, self._replies = connection, len(commands)
        self.sent_s = time.monotonic()

    def collect(self) -> list[Any]:
        """The replies, as Redis sent them; an error reply is returned as its
        redis.ResponseError. A lost connection raises (and drops it)."""
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("nothing in flight")
        replies, self._early = self._early, []
        try:
            replies += [_reply(connection) for _ in range(self._replies - len(replies))]
        except BaseException:
            self._give_back(connection, broken=True)
            raise
        self._give_back(connection, broken=False)
        return replies

    def drop(self) -> None:
        """Forget what is in flight (after a failure): its connection is closed with
        the replies unread (see above: nothing is lost)."""
        connection, self._connection = self._connection, None
        self._early = []
        if connection is not None:
            self._give_back(connection, broken=True)

    def _give_back(self, connection: Any, broken: bool) -> None:
        if broken:
            connection.disconnect()
        if self.pool is not None:
            self.pool.release(connection)


def _packed(connection: Any, commands: tuple[tuple[Any, ...], ...]) -> Any:
    """The commands in Redis's protocol, packed by hiredis in C: redis-py's
    pack_commands rebuilds each command's arguments in Python first, which took about
    twice as long for an ack of 500 entries (250 against 110 µs). The same bytes; what
    hiredis refuses (a type it does not pack) is left to redis-py."""
    try:
        # One buffer, in the list send_packed_command takes: one send for all.
        return [b"".join(hiredis.pack_command(command) for command in commands)]
    except TypeError:
        return connection.pack_commands(commands)


def _reply(connection: Any, waiting: bool = True) -> Any:
    """One reply; an error reply as a value (it was read whole: the connection stays
    in step with Redis). Not `waiting`: redis.TimeoutError if it has not arrived whole
    (what did arrive is kept for the next call; the connection stays open)."""
    try:
        if not waiting:
            return connection.read_response(timeout=0, disconnect_on_error=False)
        return connection.read_response()
    except redis.ResponseError as error:
        return error
