"""Errors the consumer raises on purpose; each is caught somewhere specific. (A bad
setting raises pipeline_core.env.SettingsError, as in every process.)"""


class ConsumerError(Exception):
    """Base of every error the consumer raises on purpose."""


class TaskModuleError(ConsumerError):
    """A module in TASK_MODULES cannot be imported or registers a clashing task."""


class InvalidMessageError(ConsumerError):
    """An entry can never succeed (unknown task, payload not a JSON object, result not
    JSON): it goes to the dead-letter stream at once."""


class UnrecoverableError(Exception):
    """Raised by a task (or a subclass of it) that knows it can never succeed: its
    entry goes to the dead-letter stream at once with the message, no retry."""


class TaskTimeoutError(TimeoutError):
    """A task ran past its timeout_s and was stopped (a failed attempt)."""
