"""Writes entries onto the stream, in the wire format of pipeline_core.wire; with
MIN_REPLICAS_ACKED, each write is then confirmed on replicas (pipeline_core.replication)
on the connection that made it."""

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline

from dispatcher.errors import DispatcherError
from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.group_state import MAX_ID
from pipeline_core.keys import Queue
from pipeline_core.replication import (
    NotReplicatedError,
    Replicas,
    one_connection,
    write_then_wait,
)
from pipeline_core.replies import REASONS
from pipeline_core.wire import encode_entry

# Under gunicorn's gevent worker nothing preempts a long loop: every this many entries
# a batch lets other requests (and /healthz) run (time.sleep(0) is gevent.sleep(0)).
# This request's parsed body is gone by then: one parse tree at a time still holds.
YIELD_EVERY = 1000
REDIS_FAILED = "redis unavailable"
OUT_OF_TIME = "paced dispatch ran out of time (MAX_PACING_S)"
NOT_CONFIRMED = (
    "the entries are on the master but not confirmed on replicas: they may or may "
    "not survive a failover"
)


class PublishInterruptedError(DispatcherError):
    """A paced dispatch stopped (Redis failed, or its time ran out); `entry_ids` were
    written before."""

    def __init__(self, entry_ids: list[str], why: str = REDIS_FAILED) -> None:
        super().__init__(f"publishing stopped after {len(entry_ids)} entries: {why}")
        self.entry_ids = entry_ids
        self.why = why


def publish(
    client: Client,
    stream: str,
    task: str,
    payloads: Sequence[str],
    owner: str | None = None,
    replicas: Replicas | None = None,
) -> list[str]:
    """Append every payload in one MULTI/EXEC: the whole batch or none of it. With
    `replicas`, WAIT follows EXEC on the same connection (NotReplicatedError when too
    few replicas confirm in time)."""

    def add_all(pipe: Pipeline) -> None:
        for index, payload in enumerate(payloads):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)
            pipe.xadd(stream, encode_entry(task, payload, owner))

    if replicas is None:
        with client.pipeline(transaction=True) as pipe:
            add_all(pipe)
            return [_entry_id(reply) for reply in pipe.execute()]
    written, acked = write_then_wait(client, add_all, replicas, key=stream)
    entry_ids = [_entry_id(reply) for reply in written]
    replicas.check(acked, entry_ids)
    return entry_ids


def publish_paced(
    client: Client,
    stream: str,
    task: str,
    payloads: Sequence[str],
    delay_s: float,
    deadline_s: float,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    owner: str | None = None,
    replicas: Replicas | None = None,
) -> list[str]:
    """Append the payloads one at a time, `delay_s` apart (the seed's pacing). After
    the first, no write starts past `deadline_s` (on `clock`): the request's end is
    bounded, however slow Redis is, by the deadline plus the one write in flight (its
    socket timeout). With `replicas`, every XADD and then WAIT go on one connection,
    held for the whole request."""

    def pace(target: Client) -> list[str]:
        entry_ids: list[str] = []
        for index, payload in enumerate(payloads):
            if index:
                if clock() + delay_s > deadline_s:
                    raise PublishInterruptedError(entry_ids, OUT_OF_TIME)
                sleep(delay_s)
            try:
                reply = target.xadd(stream, encode_entry(task, payload, owner))
            except redis.RedisError as error:
                raise PublishInterruptedError(entry_ids) from error
            entry_ids.append(_entry_id(reply))
        return entry_ids

    if replicas is None:
        return pace(client)
    with one_connection(client, stream) as held:
        entry_ids = pace(held)
        try:
            acked = held.wait(replicas.count, replicas.timeout_ms)
        except redis.RedisError as error:  # all written; none confirmed
            raise PublishInterruptedError(entry_ids) from error
    replicas.check(int(acked), entry_ids)
    return entry_ids


def _entry_id(reply: object) -> str:
    if not isinstance(reply, str):
        raise TypeError(f"XADD answered {reply!r}, expected an entry ID string")
    return reply


# What a producer that wrote the largest entry ID leaves: XADD * can never succeed.
EXHAUSTED = "the stream's last entry ID is the largest possible"


def unavailable_body(kind: str, error: Exception) -> dict[str, str]:
    """A 503's body: what went wrong, named (never the raw reply)."""
    if "exhausted the last possible ID" in str(error) or "equal or smaller" in str(
        error
    ):
        why = "another producer wrote it; an operator must repair the stream"
        return {"error": "stream cannot take entries", "reason": f"{EXHAUSTED}: {why}"}
    return {"error": "redis unavailable", "reason": REASONS[kind]}


def unreplicated_body(error: NotReplicatedError) -> dict[str, Any]:
    """The 503 of a write WAIT did not confirm on enough replicas in time."""
    wanted = f"{error.acked} of {error.wanted} replicas (MIN_REPLICAS_ACKED)"
    return {
        "error": "not confirmed on replicas",
        "reason": f"{wanted} confirmed the write within REPLICA_ACK_TIMEOUT_MS",
        "outcome": NOT_CONFIRMED,
        "retry": "safe with the same Idempotency-Key: it writes nothing again and "
        "answers 202 once replicas confirm the entries; without a key a retry may "
        "run the tasks twice",
        "entry_ids": error.entry_ids,
    }


def stream_ids_exhausted(client: Client, stream: str) -> str | None:
    """Why no entry can be added to the stream, or None (one XINFO STREAM)."""
    try:
        last = client.xinfo_stream(stream)["last-generated-id"]
    except redis.ResponseError as error:
        if "no such key" in str(error):
            return None
        raise
    return (
        f"{EXHAUSTED} ({last}): another producer wrote it" if last == MAX_ID else None
    )


def queue_ids_exhausted(client: Client, queue: Queue) -> str | None:
    """Why no entry can be added to one of the queue's streams (PARTITIONS: the
    first such partition's, named), or None."""
    for part in partitions.parts(queue):
        why = stream_ids_exhausted(client, part.stream)
        if why:
            return why if queue.partitions == 1 else f"{part.stream!r}: {why}"
    return None
