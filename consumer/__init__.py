"""Consumer workers for the Redis stream, and sending tasks to them from Python:
`from consumer import task` (then `fn.send(...)`), `send_task`, `configure`; a task
raises `UnrecoverableError` to be dead-lettered at once, never retried."""

from consumer.api import configure, send_task, task_ref
from consumer.errors import UnrecoverableError
from consumer.tasks import Task, task
from pipeline_core.payloads import PayloadError
from pipeline_core.send_script import (
    BacklogFullError,
    IdempotencyConflictError,
    SendError,
)
from pipeline_core.sending import SenderSettings
from pipeline_core.task_ref import (
    TaskCancelledError,
    TaskFailedError,
    TaskRef,
    TaskUnknownError,
)

__all__ = [
    "BacklogFullError",
    "IdempotencyConflictError",
    "PayloadError",
    "SendError",
    "SenderSettings",
    "Task",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskRef",
    "TaskUnknownError",
    "UnrecoverableError",
    "configure",
    "send_task",
    "task",
    "task_ref",
]
