"""A sent task, by its ID: `TaskRef` (status, result, cancel), handed back by
`Sender` (pipeline_core/sending.py), and the errors its result raises."""

import time
from typing import TYPE_CHECKING, Any

from pipeline_core import all_partitions, partitions, task_state
from pipeline_core.send_script import SendError
from pipeline_core.task_state import TaskStatus

if TYPE_CHECKING:  # the sender hands out TaskRefs: imported for the type only
    from pipeline_core.sending import Sender


class TaskFailedError(SendError):
    """The task ended in the dead-letter stream; `reason` says why."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} is dead: {reason}")
        self.task_id, self.reason = task_id, reason


class TaskCancelledError(SendError):
    """The task was cancelled before it ran."""


class TaskUnknownError(SendError):
    """Redis knows nothing of the task (never sent here, or its record expired)."""


class TaskRef:
    """A sent task: `.id`, and its status, result and cancellation by that ID."""

    __slots__ = ("id", "sender")

    def __init__(self, task_id: str, sender: "Sender") -> None:
        self.id, self.sender = task_id, sender

    def __repr__(self) -> str:
        return f"TaskRef({self.id!r})"

    def status(self) -> dict[str, Any]:
        """The same JSON as GET /tasks/<id>."""
        return all_partitions.task_body(self.sender.queue, self.id, self._status())

    def result(self, timeout_s: float) -> Any:
        """The task's return value once it succeeded; raises TaskFailedError (dead),
        TaskCancelledError, or TimeoutError past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        pause_s = 0.01
        while True:
            found = self._status()
            if found.state in ("succeeded", "dead", "cancelled"):
                return _outcome(found)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"task {self.id} is {found.state} after {timeout_s:g} s"
                )
            time.sleep(min(pause_s, remaining))
            pause_s = min(pause_s * 2, 0.5)

    def cancel(self) -> bool:
        """Cancel the task if it has not started (queued, delayed or retrying): True if
        this call cancelled it."""
        _, queue, entry_id = partitions.locate(self.sender.queue, self.id)
        found = task_state.cancel(self.sender.client, queue, entry_id)
        return found is not None and found.cancelled_now

    def _status(self) -> TaskStatus:
        _, queue, entry_id = partitions.locate(self.sender.queue, self.id)
        found = task_state.status(self.sender.client, queue, entry_id)
        if found is None:
            raise TaskUnknownError(f"no task {self.id} (unknown, or expired)")
        return found


def _outcome(found: TaskStatus) -> Any:
    body = found.as_json()
    if found.state == "dead":
        raise TaskFailedError(body["id"], body.get("error", "dead-lettered"))
    if found.state == "cancelled":
        raise TaskCancelledError(f"task {body['id']} was cancelled")
    return body.get("result")
