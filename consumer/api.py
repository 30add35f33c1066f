"""Sending tasks from Python: the default sender behind `fn.send(...)` and
`send_task`, made from the environment at the first send (nothing connects at import),
or from `configure(...)` for a program that does not use the environment."""

import threading
from collections.abc import Mapping
from typing import Any

from pipeline_core.connection import Client
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.task_ref import TaskRef

# The one sender of this process, made on first use: the lock keeps two threads'
# first sends from making two.
_lock = threading.Lock()
_default: list[Sender] = []


def configure(
    settings: SenderSettings | None = None, *, client: Client | None = None
) -> Sender:
    """Set the process's sender: explicit settings (or the environment's, if None)
    and, optionally, a client of your own. Replaces (and closes) the one before."""
    with _lock:
        for old in _default:
            old.close()
        _default[:] = [Sender(settings, client)]
        return _default[0]


def sender() -> Sender:
    """The process's sender, made from the environment at the first call."""
    with _lock:
        if not _default:
            _default.append(Sender())
        return _default[0]


def send_task(
    name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
) -> TaskRef:
    """Send a task by name, for producers that do not import the task's code (its
    payload is checked against the rules, not against the function)."""
    return sender().send(name, payload or {}, idempotency_key=idempotency_key)


def task_ref(task_id: str) -> TaskRef:
    """A task sent before, by its ID: its status, result, cancellation."""
    return sender().task(task_id)
