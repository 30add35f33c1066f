"""`GET /tasks/<id>`: what happened to a task; `DELETE /tasks/<id>`: cancel one that
has not started. For the token that dispatched it, and operators' (pipeline_core's
task_state derives the state; this module answers it)."""

from flask import Flask, g

from dispatcher.errors import InvalidPayloadError
from dispatcher.ratelimit import WindowLimiter
from dispatcher.results import Answer, too_many_lookups
from dispatcher.settings import Settings
from pipeline_core import all_partitions, partitions, task_state
from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.task_state import TASK_ID_RULE, InvalidTaskIdError, TaskStatus

QUALIFIED_RULE = "must be p<partition>-<entry ID>, as /dispatch answered it"


def install_tasks(
    app: Flask, settings: Settings, lookups: WindowLimiter, client: Client
) -> None:
    @app.get("/tasks/<task_id>")
    def task_status(task_id: str) -> Answer:
        refused = too_many_lookups(lookups, settings)
        if refused:
            return refused
        found = _visible(client, settings, task_id)
        if found is None:
            return _not_found(task_id)
        return all_partitions.task_body(settings.queue, task_id, found), 200

    @app.delete("/tasks/<task_id>")
    def task_cancel(task_id: str) -> Answer:
        refused = too_many_lookups(lookups, settings)
        if refused:
            return refused
        if _visible(client, settings, task_id) is None:
            return _not_found(task_id)
        # Checked and cancelled in one script: it cannot start in between.
        queue, entry_id = _located(settings, task_id)
        after = task_state.cancel(client, queue, entry_id)
        return _cancelled(settings, after, task_id)


def _cancelled(settings: Settings, after: TaskStatus | None, task_id: str) -> Answer:
    if after is None:
        return _not_found(task_id)  # its record expired meanwhile
    if not after.cancelled_now:
        body = {"error": "task not cancellable", "id": task_id, "state": after.state}
        rule = "only a queued, delayed or retrying task can be cancelled"
        return {**body, "rule": rule}, 409
    return all_partitions.task_body(settings.queue, task_id, after), 200


def _visible(client: Client, settings: Settings, task_id: str) -> TaskStatus | None:
    """The task's status if the caller may see it: another token's task answers as
    a missing one (whether it exists is theirs)."""
    queue, entry_id = _located(settings, task_id)
    found = task_state.status(client, queue, entry_id)
    if found is None or not g.caller.may_read(found.owner):
        return None
    return found


def _located(settings: Settings, task_id: str) -> tuple[Queue, str]:
    """The partition's queue and the entry ID a task ID names (PARTITIONS)."""
    try:
        _, queue, entry_id = partitions.locate(settings.queue, task_id)
    except InvalidTaskIdError:
        rule = TASK_ID_RULE if settings.queue.partitions == 1 else QUALIFIED_RULE
        raise InvalidPayloadError("task_id", rule) from None
    return queue, entry_id


def _not_found(task_id: str) -> Answer:
    return {"error": "no such task (or its record expired)", "id": task_id}, 404
