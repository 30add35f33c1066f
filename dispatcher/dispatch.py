"""POST /dispatch: the body read within its limits (dispatcher/body.py), checked, then
held against the backlog, the memory budget and the cap on paced requests before
anything is written."""

import logging
from typing import Any

from flask import Flask, Response, g, request

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
from dispatcher.validation import (
    DispatchRequest,
    decode_json,
    message_count,
    parse_dispatch,
)
from pipeline_core.connection import Client

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

    @app.post("/dispatch")
    def dispatch() -> Answer:
        if not request.is_json:
            raise InvalidPayloadError("Content-Type", "must be application/json", 415)
        order = _read_order(bodies, settings)
        g.message_count = count = len(order.payloads)
        size = sum(len(payload) for payload in order.payloads)
        refusal = capacity.refusal(count, size)
        if refusal:
            metrics.messages.labels("throttled").inc(count)
            return refusal
        if order.delay_s > 0 and not paced.take():
            metrics.messages.labels("throttled").inc(count)
            return _too_many_paced(settings.max_paced_requests)
        try:
            entry_ids = _publish(client, settings, order)
        finally:
            if order.delay_s > 0:
                paced.give()
        capacity.add(len(entry_ids), size)
        metrics.messages.labels("accepted").inc(len(entry_ids))
        facts = {"task": order.task, "count": count, "first_entry_id": entry_ids[0]}
        log.info("dispatch accepted", extra=facts)
        body = {"stream": settings.queue.stream, "task": order.task, "count": count}
        return {**body, "entry_ids": entry_ids}, 202


def _read_order(bodies: Allowance, settings: Settings) -> DispatchRequest:
    """The body read, parsed and checked. Only the order outlives this call: while
    this request waits on Redis, another may parse its own body."""
    raw = read_body(bodies, settings.max_body_bytes, settings.front_door.body_timeout_s)
    body = decode_json(raw, settings.max_json_values)
    g.message_count = message_count(body, settings.max_messages) or 0
    return parse_dispatch(body, settings)


def _publish(client: Client, settings: Settings, order: DispatchRequest) -> list[str]:
    stream, task, payloads = settings.queue.stream, order.task, order.payloads
    owner = g.caller.fingerprint  # who may read these entries' results and states
    if order.delay_s > 0:
        # The whole request, from its first byte past the head, within MAX_PACING_S.
        deadline_s = g.started + settings.max_pacing_s
        return publish_paced(
            client, stream, task, payloads, order.delay_s, deadline_s, owner=owner
        )
    return publish(client, stream, task, payloads, owner)


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
