"""Sending tasks from Python, without HTTP: `Sender` (one round trip a send), which
hands back a `TaskRef` (pipeline_core/task_ref.py: status, result, cancel). With a key
or a due time a send runs the script `POST /dispatch` uses
(pipeline_core/send_script.py).

Without a key, a send is one MULTI of XADDs (all or none), after a backlog check as the
dispatcher makes it: the backlog read at most every BACKLOG_REFRESH_S, plus what this
sender wrote since (a burst may pass MAX_BACKLOG by what it sends in that time).
"""

import hashlib
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import RedisError
from redis.client import Pipeline
from redis.commands.core import Script
from redis.typing import EncodableT

from pipeline_core import partitions
from pipeline_core.connection import NO_RETRY, Client, connect
from pipeline_core.env import number
from pipeline_core.keys import Queue, queue_from_env
from pipeline_core.lag import read_backlog
from pipeline_core.payloads import PayloadLimits, check_payloads, limits_from_env
from pipeline_core.redis_settings import RedisSettings, redis_from_env
from pipeline_core.replication import Replicas, write_then_wait
from pipeline_core.send_script import (
    BacklogFullError,
    SendError,
    check_idempotency_key,
    checked_entry_id,
    confirm_replay,
    idempotency_record,
    send_script,
    write_tasks,
)
from pipeline_core.task_ref import TaskRef
from pipeline_core.timing import MAX_COUNTDOWN_S, NOW, Timing
from pipeline_core.wire import TASK_NAME, TASK_NAME_RULE, encode_entry

BACKLOG_REFRESH_S = 0.1


class PartlySentError(SendError):
    """PARTITIONS > 1: a partition's write failed after earlier partitions' writes;
    `task_ids` were written (a retry with the same idempotency key writes the rest)."""

    def __init__(self, task_ids: list[str], error: Exception) -> None:
        super().__init__(f"{len(task_ids)} tasks were sent before: {error!r}")
        self.task_ids = task_ids


@dataclass(frozen=True, slots=True)
class SenderSettings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    queue: Queue = field(default_factory=Queue)
    limits: PayloadLimits = field(default_factory=PayloadLimits)
    max_backlog: int = 1_000_000
    idempotency_ttl_s: int = 86_400
    max_countdown_s: float = MAX_COUNTDOWN_S
    socket_timeout_s: float = 5.0
    # MIN_REPLICAS_ACKED: a send returns only once WAIT confirms it on this many
    # replicas, else NotReplicatedError (written on the master, may not survive).
    replicas: Replicas | None = None


def sender_settings_from_env(env: Mapping[str, str]) -> SenderSettings:
    """The services' variables: REDIS_URL (and the rest of the Redis settings),
    STREAM, GROUP, MAX_BACKLOG, MAX_PAYLOAD_BYTES, ... IDEMPOTENCY_TTL_S."""
    d = SenderSettings()
    return SenderSettings(
        redis=redis_from_env(env),
        queue=queue_from_env(env),
        limits=limits_from_env(env),
        max_backlog=number(env, "MAX_BACKLOG", int, d.max_backlog, 1),
        idempotency_ttl_s=number(env, "IDEMPOTENCY_TTL_S", int, d.idempotency_ttl_s, 1),
        max_countdown_s=number(env, "MAX_COUNTDOWN_S", float, d.max_countdown_s, 1),
        replicas=replicas_from_env(env),
    )


def replicas_from_env(env: Mapping[str, str]) -> Replicas | None:
    """MIN_REPLICAS_ACKED (0: none) and REPLICA_ACK_TIMEOUT_MS, as the dispatcher."""
    count = number(env, "MIN_REPLICAS_ACKED", int, 0, 0, 100)
    timeout_ms = number(env, "REPLICA_ACK_TIMEOUT_MS", int, 1000, 1, 60_000)
    return Replicas(count, timeout_ms) if count else None


class Sender:
    """Sends tasks by name. Connects at the first send, from `settings` (or the
    environment, as the services read it)."""

    def __init__(
        self, settings: SenderSettings | None = None, client: Client | None = None
    ) -> None:
        self.settings = settings or sender_settings_from_env(os.environ)
        self._client = client
        self._script: Script | None = None
        self._backlog, self._backlog_read_s = 0, float("-inf")
        self._turns = itertools.count()  # where a send starts over the partitions

    @property
    def queue(self) -> Queue:
        return self.settings.queue

    @property
    def max_countdown_s(self) -> float:
        return self.settings.max_countdown_s

    @property
    def client(self) -> Client:
        if self._client is None:
            # No retries: a retried XADD whose reply was lost would write it twice.
            self._client = connect(
                self.settings.redis,
                socket_timeout_s=self.settings.socket_timeout_s,
                retry=NO_RETRY,
                client_name="sender",
                queue=self.queue,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._script = None, None

    def send(
        self,
        task: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        timing: Timing = NOW,
    ) -> TaskRef:
        """One task, one round trip."""
        [ref] = self.send_many(
            task, [payload], idempotency_key=idempotency_key, timing=timing
        )
        return ref

    def send_many(
        self,
        task: str,
        payloads: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timing: Timing = NOW,
    ) -> list[TaskRef]:
        """Tasks in order, all or none (with PARTITIONS > 1: round-robin over the
        partitions, all or none per partition; see PartlySentError); checked before
        anything is written."""
        if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
            raise ValueError(f"task name {task!r}: must be {TASK_NAME_RULE}")
        encoded = check_payloads(list(payloads), self.settings.limits)
        entries = [encode_entry(task, payload) for payload in encoded]
        request = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            text = "\n".join([task, repr(timing), *encoded])
            request = hashlib.sha256(text.encode()).hexdigest()
        count = self.queue.partitions
        start = next(self._turns) % count
        if idempotency_key is not None:
            start = partitions.of_key(idempotency_key, count)
        task_ids = [""] * len(entries)
        for index, positions in partitions.spread(len(entries), start, count).items():
            share = [entries[position] for position in positions]
            part = partitions.parts(self.queue)[index]
            try:
                sent = self._send(part, share, (idempotency_key, request), timing)
            except RedisError as error:
                if not any(task_ids):
                    raise
                raise PartlySentError([t for t in task_ids if t], error) from error
            for position, sent_id in zip(positions, sent, strict=True):
                task_ids[position] = partitions.task_id(self.queue, index, sent_id)
        return [TaskRef(task_id, self) for task_id in task_ids]

    def _send(
        self,
        queue: Queue,
        entries: list[dict[EncodableT, EncodableT]],
        once: tuple[str | None, str | None],
        timing: Timing,
    ) -> list[str]:
        """One partition's share (or all of them): its task IDs."""
        key, request = once
        if key is None and timing.plain:
            return self._write(queue, entries)
        idempotency = None
        if key is not None and request is not None:
            record = idempotency_record(queue, "python", key)
            idempotency = (record, request, self.settings.idempotency_ttl_s)
        if self._script is None:
            self._script = send_script(self.client)
        limit, replicas = self.settings.max_backlog, self.settings.replicas
        written = write_tasks(
            self._script, queue, entries, limit, idempotency, timing, replicas
        )
        if written.replayed and replicas is not None and idempotency is not None:
            ttl_s = self.settings.idempotency_ttl_s
            confirm_replay(
                self.client, idempotency[0], ttl_s, replicas, written.entry_ids
            )
        return written.entry_ids

    def _write(
        self, queue: Queue, entries: list[dict[EncodableT, EncodableT]]
    ) -> list[str]:
        """All of them in one MULTI, unless the backlog (as of at most
        BACKLOG_REFRESH_S ago, plus our writes since) has no room."""
        now = time.monotonic()
        if now - self._backlog_read_s >= BACKLOG_REFRESH_S:
            self._backlog = read_backlog(self.client, self.queue)
            self._backlog_read_s = now
        limit = self.settings.max_backlog
        if self._backlog + len(entries) > limit:
            raise BacklogFullError(self._backlog, limit)
        if self.settings.replicas is not None:
            entry_ids = self._write_then_wait(queue, entries, self.settings.replicas)
        elif len(entries) == 1:  # one XADD is all or nothing by itself
            entry_ids = [checked_entry_id(self.client.xadd(queue.stream, entries[0]))]
        else:
            with self.client.pipeline(transaction=True) as pipe:
                for fields in entries:
                    pipe.xadd(queue.stream, fields)
                entry_ids = [checked_entry_id(reply) for reply in pipe.execute()]
        self._backlog += len(entry_ids)
        return entry_ids

    def _write_then_wait(
        self,
        queue: Queue,
        entries: list[dict[EncodableT, EncodableT]],
        replicas: Replicas,
    ) -> list[str]:
        """One MULTI, then WAIT on its connection (pipeline_core/replication.py)."""

        def add_all(pipe: Pipeline) -> None:
            for fields in entries:
                pipe.xadd(queue.stream, fields)

        written, acked = write_then_wait(
            self.client, add_all, replicas, key=queue.stream
        )
        entry_ids = [checked_entry_id(reply) for reply in written]
        replicas.check(acked, entry_ids)
        return entry_ids

    def task(self, task_id: str) -> TaskRef:
        """A reference to a task sent before (by anyone), by its ID."""
        partitions.locate(self.queue, task_id)  # InvalidTaskIdError if malformed
        return TaskRef(task_id, self)
