"""redis-py types replies loosely (bytes or str, maybe None); narrowed here, once."""

from typing import Any


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a decoded string from Redis, got {value!r}")
    return value


def entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The (entry ID, fields) pairs of an XRANGE reply."""
    if not isinstance(reply, list):
        raise TypeError(f"expected a list of stream entries, got {reply!r}")
    return [(text(entry_id), dict(fields or {})) for entry_id, fields in reply]
