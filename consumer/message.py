"""Message: one stream entry as the consumer sees it (with its delivery count), built
from raw replies in one place; and the encoding of task results."""

import json
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.errors import InvalidMessageError
from pipeline_core.wire import (
    ATTEMPT_FIELD,
    ENTRY_ID,
    EXPIRES_FIELD,
    TASK_FIELD,
    TASK_ID_FIELD,
    entry_ms,
    stream_entries,
)


@dataclass(frozen=True, slots=True)
class Message:
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # how many times Redis has delivered this entry, this time included
    task: str = ""

    @property
    def task_id(self) -> str:
        """The task's ID: its first entry's, kept across re-queues (TASK_ID_FIELD);
        a foreign value there is ignored."""
        given = self.fields.get(TASK_ID_FIELD)
        return given if given and ENTRY_ID.fullmatch(given) else self.entry_id

    @property
    def attempt(self) -> int:
        """Attempts the task made before this entry (a retry's entry says; 0 else)."""
        given = self.fields.get(ATTEMPT_FIELD, "0")
        return int(given) if given.isdigit() and len(given) < 6 else 0

    def expired(self, now_s: float) -> bool:
        """Past the time by which it had to start (expires_s), by this clock."""
        given = self.fields.get(EXPIRES_FIELD)
        return bool(given and given.isdigit() and int(given) < now_s * 1000)

    @property
    def enqueued_s(self) -> float:
        """The enqueue time (seconds since the epoch) that the entry ID records."""
        return entry_ms(self.entry_id) / 1000


def to_messages(entries: object, deliveries: dict[str, int] | int) -> list[Message]:
    """Convert the entries of an XREADGROUP or XAUTOCLAIM reply; counts come per ID or
    as one."""
    pairs = stream_entries(entries)
    if isinstance(deliveries, int):  # a read: tested once, not per entry
        return [Message(i, f, deliveries, f.get(TASK_FIELD, "")) for i, f in pairs]
    return [
        Message(i, f, deliveries.get(i, 1), f.get(TASK_FIELD, "")) for i, f in pairs
    ]


def read_entries(reply: object) -> object:
    """The entries of a one-stream XREADGROUP reply: [[stream, entries]], or empty."""
    if not reply:
        return []
    if not isinstance(reply, list) or len(reply) != 1:
        raise TypeError(f"expected a one-stream XREADGROUP reply, got {reply!r}")
    _stream, entries = reply[0]
    return entries


def encode_result(value: Any, limit_bytes: int) -> str:
    """A task's return value as stored JSON: finite numbers only, at most limit_bytes;
    anything else can never be stored (the entry is dead-lettered)."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = _encode_slowly(value)
    # orjson writes NaN and Infinity as null, silently: a null where the value is not
    # None is checked again by the json module, which refuses them.
    if "null" in text and value is not None:
        text = _encode_slowly(value)
    if len(text) > limit_bytes:
        raise InvalidMessageError(f"result is over {limit_bytes} bytes as JSON")
    return text


def _encode_slowly(value: Any) -> str:
    """The json module: slower, but strict about NaN and Infinity, and it takes
    integers beyond 64 bits, unlike orjson."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMessageError(f"result is not JSON: {error}") from None
