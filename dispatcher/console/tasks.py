"""The console's task pages: look a task up by ID (its state as GET /tasks/<id> tells
it, with its result or error) and cancel it when it has not started; the tasks waiting
to be due (delayed ones and retries) and the periodic tasks' schedules. The reads and
the cancel are pipeline_core's, exactly as `pipeline task` and `pipeline delayed` do
them, over every partition with PARTITIONS > 1 (task IDs p<partition>-<entry ID>)."""

import json
import logging
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, request, url_for
from werkzeug.wrappers.response import Response as BaseResponse

from dispatcher.console.views import render
from dispatcher.settings import Settings
from pipeline_core import all_partitions, partitions, task_state
from pipeline_core.connection import Client, redis_now_ms
from pipeline_core.keys import Queue
from pipeline_core.schedules import read_schedules

log = logging.getLogger(__name__)

WAITING_SHOWN = 100  # tasks waiting to be due on one page, the earliest first


def install(console: Blueprint, settings: Settings, client: Client) -> None:
    queue = settings.queue

    @console.get("/tasks")
    def task_page() -> str:
        task_id = (request.args.get("id") or "").strip()
        found, problem = _look_up(client, queue, task_id)
        body = all_partitions.task_body(queue, task_id, found) if found else None
        return render(
            "task", active="tasks", task_id=task_id, body=_shown(body), problem=problem,
            cancellable=found is not None and found.state in task_state.CANCELLABLE,
        )  # fmt: skip

    _install_cancel(console, settings, client)
    _install_delayed(console, settings, client)


def _look_up(
    client: Client, queue: Queue, task_id: str
) -> tuple[task_state.TaskStatus | None, str | None]:
    """The task's status, or why there is none to show."""
    if not task_id:
        return None, None
    try:
        found = all_partitions.task(client, queue, task_id)
    except task_state.InvalidTaskIdError as error:
        return None, str(error)
    if found is None:
        return None, f"No task {task_id}: unknown, or its record expired."
    return found, None


def _install_cancel(console: Blueprint, settings: Settings, client: Client) -> None:
    queue = settings.queue

    @console.post("/tasks/cancel")
    def cancel_task() -> BaseResponse | str:
        task_id = request.form.get("id", "")
        if not task_id:
            abort(400, "Say which task to cancel.")
        if request.form.get("confirmed") != "1":
            back = url_for("console.task_page", id=task_id)
            return render("confirm", action="cancel", task_id=task_id, back=back)
        try:
            found = all_partitions.task(client, queue, task_id, cancel=True)
        except task_state.InvalidTaskIdError as error:
            abort(400, str(error))
        done = found is not None and found.cancelled_now
        log.info("console action", extra={"who": g.console_user.who, "action":
                 "cancel", "count": int(done), "task_id": task_id})  # fmt: skip
        state = found.state if found else "unknown"
        flash(f"Cancelled task {task_id}." if done
              else f"Task {task_id} is {state}: left alone.")  # fmt: skip
        return redirect(url_for("console.task_page", id=task_id), 303)


def _install_delayed(console: Blueprint, settings: Settings, client: Client) -> None:
    queue = settings.queue

    @console.get("/delayed")
    def delayed_page() -> str:
        state = all_partitions.total(all_partitions.read_states(client, queue))
        now_ms = redis_now_ms(client, queue)
        waiting = all_partitions.waiting(client, queue, WAITING_SHOWN)
        # Only partition 0's clock ticks the periodic tasks (docs/partitions.md).
        first = partitions.parts(queue)[0]
        return render(
            "delayed", active="delayed", state=state, now_ms=now_ms,
            waiting=waiting, schedules=read_schedules(client, first),
        )  # fmt: skip


def _shown(body: dict[str, Any] | None) -> list[tuple[str, str]] | None:
    """The status as rows: text as it is, anything else as JSON."""
    if body is None:
        return None
    return [
        (name, value if isinstance(value, str) else json.dumps(value, indent=2))
        for name, value in body.items()
    ]
