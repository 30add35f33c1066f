"""An Idempotency-Key on POST /dispatch: the request is written at most once per key
and token for IDEMPOTENCY_TTL_S (pipeline_core/send_script.py records the key with the
entries, atomically); a repeat gets the first answer, another body a 422. With
PARTITIONS each partition keeps its own record of the key (dispatcher/spreading.py)."""

import hashlib

from flask import g
from redis.commands.core import Script

from dispatcher.errors import InvalidPayloadError
from dispatcher.settings import Settings
from dispatcher.validation import DispatchRequest
from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.send_script import (
    IdempotencyConflictError,
    Written,
    confirm_replay,
    idempotency_record,
    write_tasks,
)
from pipeline_core.wire import encode_entry

WITH_DELAY = "cannot go with a delay: paced entries are written one by one"
KEY_REUSED = "this key came with another request (task or payloads) before"


class Once:
    """A request with an Idempotency-Key: written at most once per key and token for
    IDEMPOTENCY_TTL_S (pipeline_core.send_script records the key with the
    entries, atomically); a repeat gets the first answer, another body a 422."""

    def __init__(
        self, settings: Settings, key: str, order: DispatchRequest, script: Script
    ) -> None:
        if order.delay_s > 0:
            raise InvalidPayloadError("Idempotency-Key", WITH_DELAY)
        self.settings, self.order, self.script = settings, order, script
        self.scope, self.key = g.caller.fingerprint or "anonymous", key
        # Each partition keeps its own record of the key (dispatcher/spreading.py).
        self.record = idempotency_record(settings.queue, self.scope, key)
        # The same task, payloads and timing make the same request.
        digest = hashlib.sha256(f"{order.task}\n{order.timing!r}".encode())
        for payload in order.payloads:
            digest.update(b"\n" + payload.encode())
        self.request = digest.hexdigest()

    def earlier(self, client: Client, queue: Queue) -> Written | None:
        """The key's first answer in `queue`, if it had one (raises on another
        body)."""
        record = idempotency_record(queue, self.scope, self.key)
        request_hash, ids = client.hmget(record, ["request", "ids"])
        if request_hash is None:
            return None
        if request_hash != self.request:
            raise IdempotencyConflictError(KEY_REUSED)
        return Written(str(ids).split(","), replayed=True)

    def write(self, queue: Queue, order: DispatchRequest) -> Written:
        """The entries of `order` (the request's, or its share of one partition) and
        the key's record in one step (or the twin's answer)."""
        owner = g.caller.fingerprint
        record = idempotency_record(queue, self.scope, self.key)
        entries = [encode_entry(order.task, p, owner) for p in order.payloads]
        return write_tasks(
            self.script, queue, entries, self.settings.max_backlog,
            (record, self.request, self.settings.idempotency_ttl_s),
            order.timing, self.settings.replicas,
        )  # fmt: skip

    def confirmed(self, client: Client, replay: Written) -> Written:
        """A replay, once its entries are on enough replicas (MIN_REPLICAS_ACKED): the
        retry of a 503 must not get a 202 for entries a failover could still lose."""
        replicas = self.settings.replicas
        if replicas is not None:
            ttl_s = self.settings.idempotency_ttl_s
            confirm_replay(client, self.record, ttl_s, replicas, replay.entry_ids)
        return replay
