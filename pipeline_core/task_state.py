"""What happened to a task, by its ID, and cancelling one not yet started: for
`GET/DELETE /tasks/<id>`, `TaskRef` and `pipeline task`.

The state is derived from what Redis holds anyway (the stream, the group's pending
list, the dead-letter stream) plus a few fields beside the task's result in its
per-minute results hash (`{tasks}:results:<minute of the task ID>`), each written in the
same round trip as the work it records, and expiring with the result (RESULT_TTL_S):

  <id>          the result (the consumer's MULTI with the XACK)
  <id>:owner    the fingerprint of the token that dispatched it (same MULTI)
  <id>:state    "cancelled", once a consumer acknowledged it unrun (same MULTI)
  <id>:dead     the dead letter's ID (the dead-letter script)
  <id>:failed   {"deliveries", "error"} of the last failed attempt (one HSET)

and cancel requests, a sorted set `{tasks}:cancels` (task ID -> when), read by the
consumers in the round trip of each read, that expires with its last request.

One Lua script (pipeline_core/task_scripts.py) reads it all at once (a consistent
snapshot, one round trip, one slot); the cancel script derives the state the same way
and cancels in the same step, so a task cannot start between the check and the cancel.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.typing import EncodableT

from pipeline_core.connection import Client
from pipeline_core.delayed import delayed_key, delayed_tasks_key
from pipeline_core.keys import Queue
from pipeline_core.task_scripts import CANCEL, STATUS
from pipeline_core.wire import ENTRY_ID, entry_ms

STATES = ("queued", "delayed", "running", "retrying", "succeeded", "dead",
          "cancelled", "expired")  # fmt: skip
CANCELLABLE = ("queued", "delayed", "retrying")
TASK_ID_RULE = "must look like <milliseconds>-<sequence> (numbers of 64 bits)"
CANCELS = "cancels"  # Queue.key(CANCELS): the cancel requests
CANCELLED = "cancelled"  # Queue.key(CANCELLED): delayed tasks cancelled while waiting
CANCEL_TTL_MS = 7 * 86_400_000  # a request not acted on in a week is dropped


class InvalidTaskIdError(ValueError):
    """A task ID that cannot be one (not <milliseconds>-<sequence>)."""

    def __init__(self, task_id: str, rule: str = TASK_ID_RULE) -> None:
        super().__init__(f"task ID {task_id!r} {rule}")
        self.task_id = task_id


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """A task as Redis holds it now; `as_json()` is the body of GET /tasks/<id>."""

    facts: dict[str, str]

    @property
    def now_s(self) -> float:
        """Redis's clock when read: ages are measured against it."""
        return int(self.facts["now_ms"]) / 1000

    @property
    def state(self) -> str:
        return self.facts["state"]

    @property
    def owner(self) -> str | None:
        return self.facts.get("owner")

    @property
    def cancelled_now(self) -> bool:
        return self.facts.get("cancelled") == "1"

    def as_json(self) -> dict[str, Any]:
        f = self.facts
        task_id = f["id"]
        enqueued_s = entry_ms(task_id) / 1000
        body: dict[str, Any] = {
            "id": task_id,
            "task": f.get("task"),
            "state": self.state,
            "enqueued_at": _rfc3339(enqueued_s),
            "age_s": round(max(0.0, self.now_s - enqueued_s), 3),
        }
        if f.get("entry_id", task_id) != task_id:
            body["entry_id"] = f["entry_id"]  # a retry's or a delayed task's entry
        for name, shown, convert in FACT_FIELDS:
            if name in f:
                body[shown] = convert(f[name])
        if "due_ms" in f:
            due = "due_at" if self.state == "delayed" else "next_attempt_at"
            body[due] = _rfc3339(int(f["due_ms"]) / 1000)
        if self.state == "succeeded":
            body["result"] = _parsed(f.get("result"))
            if f.get("result_missing"):
                body["result_missing"] = True  # acknowledged; its result expired
        return body


def _seconds(ms: str) -> float:
    return int(ms) / 1000


# The facts shown as they are, renamed or converted: (fact, JSON field, conversion).
FACT_FIELDS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("deliveries", "deliveries", int),
    ("attempts", "attempts", int),
    ("consumer", "consumer", str),
    ("idle_ms", "idle_s", _seconds),
    ("error", "error", str),
    ("dead_id", "dead_letter_id", str),
)


def check_task_id(task_id: str) -> str:
    """A task ID as Redis takes an entry ID: two numbers of 64 bits each."""
    if not ENTRY_ID.fullmatch(task_id) or any(
        int(part) >= 2**64 for part in task_id.split("-")
    ):
        raise InvalidTaskIdError(task_id)
    return task_id


def status(client: Client, queue: Queue, task_id: str) -> TaskStatus | None:
    """The task's state and facts, or None if Redis knows nothing of it (unknown, or
    its record expired)."""
    keys = _keys(queue, check_task_id(task_id))
    reply = client.register_script(STATUS)(keys=keys, args=[queue.group, task_id])
    return _status(reply)


def cancel(
    client: Client, queue: Queue, task_id: str, result_ttl_s: int = 86_400
) -> TaskStatus | None:
    """Cancel a task not started (queued, delayed or waiting to retry); the status
    after. `cancelled_now` says whether this call cancelled it; None: unknown."""
    keys = _keys(queue, check_task_id(task_id))
    args: list[EncodableT] = [queue.group, task_id, CANCEL_TTL_MS, result_ttl_s]
    reply = client.register_script(CANCEL)(keys=keys, args=args)
    return _status(reply)


def failed_record(deliveries: int, error: str) -> str:
    """The `<id>:failed` field: the last failed attempt, so its state reads
    `retrying` until it is delivered again."""
    return json.dumps({"deliveries": deliveries, "error": error})


def _keys(queue: Queue, task_id: str) -> list[str]:
    return [
        queue.stream,
        queue.dead_letter_stream,
        queue.results_key(task_id),
        queue.key(CANCELS),
        delayed_key(queue),
        delayed_tasks_key(queue),
        queue.key(CANCELLED),
    ]


def _status(reply: object) -> TaskStatus | None:
    if not reply:
        return None
    if not isinstance(reply, list):
        raise TypeError(f"task status script answered {reply!r}")
    facts = {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply), 2)}
    return TaskStatus(facts)


def _parsed(result: str | None) -> Any:
    if result is None:
        return None
    try:
        return json.loads(result)
    except ValueError:
        return result  # not ours: shown as stored


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (
        f".{int(seconds * 1000) % 1000:03d}Z"
    )
