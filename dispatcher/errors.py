"""Errors the dispatcher raises and maps to HTTP answers. (A bad setting raises
pipeline_core.env.SettingsError, as in every process.)"""


class DispatcherError(Exception):
    """Base of every error the dispatcher raises on purpose."""


class InvalidPayloadError(DispatcherError):
    """A request body breaks a rule; answered with a 4xx naming the field."""

    def __init__(self, field: str, rule: str, status: int = 400) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.status = status


class BusyError(DispatcherError):
    """The process holds as many request bodies as it may; answered 503 with
    Retry-After (the body is left unread)."""
