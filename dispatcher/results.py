"""`GET /results/<id>`: a task's stored result, for the token that dispatched it (and
operators'), at a bounded rate per client. The ID is the task's (its entry ID)."""

import json
from typing import Any

from flask import Flask, g, request

from dispatcher.errors import InvalidPayloadError
from dispatcher.ratelimit import WindowLimiter
from dispatcher.settings import Settings
from dispatcher.validation import check_entry_id
from pipeline_core import partitions
from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.task_state import InvalidTaskIdError
from pipeline_core.wire import owner_field

Answer = tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]


def client_key() -> str:
    """Whom a lookup counts against: the caller's token, else its address."""
    return g.caller.fingerprint or request.remote_addr or "?"


def too_many_lookups(lookups: WindowLimiter, settings: Settings) -> Answer | None:
    """The 429 of a caller past LOOKUPS_PER_MINUTE (results and task states alike)."""
    if lookups.allow(client_key()):
        return None
    limit = {
        "error": "too many lookups",
        "limit_per_minute": settings.lookups_per_minute,
    }
    return limit, 429, {"Retry-After": "10"}


def install_results(
    app: Flask, settings: Settings, lookups: WindowLimiter, client: Client
) -> None:
    @app.get("/results/<entry_id>")
    def result(entry_id: str) -> Answer:
        refused = too_many_lookups(lookups, settings)
        if refused:
            return refused
        queue, raw_id = _located(settings, entry_id)
        key = queue.results_key(raw_id)
        stored, owner = client.hmget(key, [raw_id, owner_field(raw_id)])
        # Another token's entry answers as a missing one: whether it exists is theirs.
        if stored is None or not g.caller.may_read(owner):
            return {
                "error": "no result (yet) for this entry",
                "entry_id": entry_id,
            }, 404
        return {"entry_id": entry_id, "result": json.loads(stored)}, 200


def _located(settings: Settings, given: str) -> tuple[Queue, str]:
    """The queue and entry ID of /results/<id>: with PARTITIONS > 1 the ID is the task
    ID /dispatch answered (p<partition>-<entry ID>)."""
    if settings.queue.partitions == 1:
        return settings.queue, check_entry_id(given)
    try:
        _, queue, entry_id = partitions.locate(settings.queue, given)
    except InvalidTaskIdError:
        rule = "must be p<partition>-<entry ID>, as /dispatch answered it"
        raise InvalidPayloadError("entry_id", rule) from None
    return queue, entry_id
