"""POST /dispatch: the body read within its limits (dispatcher/body.py), checked, then
held against the backlog, the memory budget and the cap on paced requests before
anything is written; with an Idempotency-Key, written once per key. With
MIN_REPLICAS_ACKED, every write path (and a replay) answers 202 only once WAIT
confirms the entries on that many replicas, else 503 (pipeline_core/replication.py)."""

import hashlib
import logging
from typing import Any

from flask import Flask, Response, g, request
from redis.commands.core import Script

from dispatcher.body import (
    Allowance,
    close_if_body_unread,
    give_back,
    parse_form_in_time,
    read_body,
)
from dispatcher.capacity import Capacity
from dispatcher.errors import InvalidPayloadError
from dispatcher.metrics import DispatcherMetrics
from dispatcher.publisher import publish, publish_paced
from dispatcher.settings import Settings
from dispatcher.spreading import PartlyWrittenError, Spreader
from dispatcher.validation import (
    DispatchRequest,
    decode_json,
    message_count,
    parse_dispatch,
)
from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.send_script import (
    IDEMPOTENCY_KEY_RULE,
    BacklogFullError,
    IdempotencyConflictError,
    Written,
    check_idempotency_key,
    confirm_replay,
    idempotency_record,
    send_script,
    write_tasks,
)
from pipeline_core.wire import encode_entry

log = logging.getLogger(__name__)

Answer = tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]
RETRY_LATER = {"Retry-After": "1"}
# The bodies one process holds at once (read, parsed or being written) add up to at
# most this many times MAX_BODY_BYTES: two of the largest, or many small ones.
BODY_BUDGET = 2


def install_dispatch(
    app: Flask, settings: Settings, client: Client, metrics: DispatcherMetrics
) -> None:
    budget = (settings.memory_budget_bytes, settings.memory_budget_ratio)
    capacity = Capacity(client, settings.queue, settings.max_backlog, budget)
    bodies = Allowance(BODY_BUDGET * settings.max_body_bytes)
    paced = Allowance(settings.max_paced_requests)
    _install_front_door(app, settings, bodies, metrics)
    _install_refusals(app, metrics)
    send = send_script(client)
    spreader = Spreader(settings.queue)

    @app.post("/dispatch")
    def dispatch() -> Answer:
        if not request.is_json:
            raise InvalidPayloadError("Content-Type", "must be application/json", 415)
        key = _idempotency_key()
        order = _read_order(bodies, settings)
        g.message_count = count = len(order.payloads)
        once = Once(settings, key, order, send) if key else None
        groups = spreader.groups(order, key)
        earlier = once.earlier(client, _first(settings, groups)) if once else None
        if once and earlier and settings.queue.partitions == 1:
            # A replay is answered whatever the load.
            return _replayed(once.confirmed(client, earlier), settings, order, metrics)
        size = sum(len(payload) for payload in order.payloads)
        # A retry completing a partly written request is not refused for load.
        refusal: Answer | None = None if earlier else capacity.refusal(count, size)
        refusal = refusal or _paced_refusal(order, paced, settings)
        if refusal:
            metrics.messages.labels("throttled").inc(count)
            return refusal
        try:
            written = spreader.write(order, groups, once.write if once else (
                lambda queue, part: _publish(client, settings, queue, part, send)
            ))  # fmt: skip
        finally:
            if order.delay_s > 0:
                paced.give()
        if once and written.replayed:  # a twin request with the key won the race
            return _replayed(once.confirmed(client, written), settings, order, metrics)
        entry_ids = written.entry_ids
        capacity.add(len(entry_ids), size)
        metrics.messages.labels("accepted").inc(len(entry_ids))
        facts = {"task": order.task, "count": count, "first_task_id": entry_ids[0]}
        log.info("dispatch accepted", extra=facts)
        return _accepted(settings, order, entry_ids), 202


def _install_refusals(app: Flask, metrics: DispatcherMetrics) -> None:
    """The answers of refusals the send script makes (nothing written by them)."""

    @app.errorhandler(IdempotencyConflictError)
    def conflict(error: IdempotencyConflictError) -> Answer:
        body = {"error": "idempotency key reused", "field": "Idempotency-Key"}
        return {**body, "rule": str(error)}, 422

    @app.errorhandler(PartlyWrittenError)
    def partly_written(error: PartlyWrittenError) -> Answer:
        metrics.messages.labels("accepted").inc(len(error.task_ids))
        facts = {"written": len(error.task_ids), "error": repr(error.error)}
        log.error("dispatch partly written", extra=facts)
        body = {
            "error": "partly written",
            "reason": "a partition's write failed after earlier partitions' writes",
            "written_task_ids": error.task_ids,
            "retry": "safe with the same Idempotency-Key: it writes only what is "
            "missing; without a key a retry runs the written tasks twice",
        }
        return body, 503, RETRY_LATER

    @app.errorhandler(BacklogFullError)
    def backlog_full(error: BacklogFullError) -> Answer:
        metrics.messages.labels("throttled").inc(g.get("message_count", 0))
        body = {"error": "backlog full", "backlog": error.backlog, "limit": error.limit}
        return body, 429, RETRY_LATER


def _paced_refusal(
    order: DispatchRequest, paced: Allowance, settings: Settings
) -> Answer | None:
    if order.delay_s > 0 and not paced.take():
        return _too_many_paced(settings.max_paced_requests)
    return None


def _accepted(
    settings: Settings, order: DispatchRequest, entry_ids: list[str]
) -> dict[str, Any]:
    """The 202's body: a replay renders the same from the same request and IDs."""
    body = {"stream": settings.queue.stream, "task": order.task}
    queue = settings.queue
    if queue.partitions > 1:  # task IDs p<i>-<entry ID>: each names its partition
        located = [partitions.locate(queue, task_id) for task_id in entry_ids]
        return {**body, "count": len(entry_ids),
                "entry_ids": [entry_id for _, _, entry_id in located],
                "partitions": [index for index, _, _ in located],
                "task_ids": entry_ids}  # fmt: skip
    # The task IDs are the entry IDs of tasks written at once.
    return {**body, "count": len(entry_ids), "entry_ids": entry_ids,
            "task_ids": entry_ids}  # fmt: skip


def _replayed(
    written: Written,
    settings: Settings,
    order: DispatchRequest,
    metrics: DispatcherMetrics,
) -> Answer:
    metrics.messages.labels("replayed").inc(len(written.entry_ids))
    body = _accepted(settings, order, written.entry_ids)
    return body, 202, {"Idempotent-Replayed": "true"}


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    try:
        return check_idempotency_key(key)
    except ValueError:
        raise InvalidPayloadError("Idempotency-Key", IDEMPOTENCY_KEY_RULE) from None


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


def _read_order(bodies: Allowance, settings: Settings) -> DispatchRequest:
    """The body read, parsed and checked. Only the order outlives this call: while
    this request waits on Redis, another may parse its own body."""
    raw = read_body(bodies, settings.max_body_bytes, settings.front_door.body_timeout_s)
    body = decode_json(raw, settings.max_json_values)
    g.message_count = message_count(body, settings.max_messages) or 0
    return parse_dispatch(body, settings)


def _first(settings: Settings, groups: dict[int, list[int]]) -> Queue:
    """The queue of a request's first partition (where a replay is looked up)."""
    return partitions.parts(settings.queue)[next(iter(groups))]


def _publish(
    client: Client, settings: Settings, queue: Queue, order: DispatchRequest,
    send: Script,
) -> Written:  # fmt: skip
    stream, task, payloads = queue.stream, order.task, order.payloads
    owner = g.caller.fingerprint  # who may read these entries' results and states
    replicas = settings.replicas
    if not order.timing.plain:  # later, or expiring: the send script (due times)
        entries = [encode_entry(task, payload, owner) for payload in payloads]
        limit = settings.max_backlog
        return write_tasks(
            send, queue, entries, limit, timing=order.timing, replicas=replicas
        )
    if order.delay_s > 0:
        # The whole request, from its first byte past the head, within MAX_PACING_S.
        deadline_s = g.started + settings.max_pacing_s
        return Written(
            publish_paced(
                client, stream, task, payloads, order.delay_s, deadline_s,
                owner=owner, replicas=replicas,
            )
        )  # fmt: skip
    return Written(publish(client, stream, task, payloads, owner, replicas))


def _too_many_paced(limit: int) -> Answer:
    rule = f"at most {limit} paced dispatches (with a delay) run at once per process"
    body = {"error": "too many paced dispatches", "limit": limit, "rule": rule}
    return body, 429, RETRY_LATER


def _install_front_door(
    app: Flask, settings: Settings, bodies: Allowance, metrics: DispatcherMetrics
) -> None:
    @app.before_request
    def read_forms_in_time() -> None:
        parse_form_in_time(settings.front_door.body_timeout_s)

    @app.after_request
    def count_refusals_and_close(response: Response) -> Response:
        # Refused messages: as many as the body asked for when it said so plainly,
        # else 1 per request (401, 408, 413, 415, a body that is not JSON...).
        code = response.status_code
        if request.endpoint == "dispatch" and 400 <= code < 500 and code != 429:
            metrics.messages.labels("refused").inc(g.get("message_count") or 1)
        close_if_body_unread()
        return response

    @app.teardown_request
    def release_body(error: BaseException | None) -> None:
        give_back(bodies)
