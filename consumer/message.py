"""Message: one stream entry as the consumer sees it, built from raw replies in one
place.

The wire format (written by the dispatcher): fields `task` (a name) and `payload` (a
JSON object). The entry ID is the enqueue time in milliseconds."""

import json
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.errors import InvalidMessageError

TASK_FIELD = "task"
PAYLOAD_FIELD = "payload"
# Results live in one hash per hour of enqueue time (field: the entry ID), so a batch's
# results go out in one HSET; the dispatcher finds the hash from the entry ID alone.
RESULT_BUCKET_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Message:
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # how many times Redis has delivered this entry, this time included
    task: str = ""

    @property
    def enqueued_s(self) -> float:
        """The enqueue time (seconds since the epoch) that the entry ID records."""
        return int(self.entry_id.split("-", 1)[0]) / 1000


def to_messages(entries: object, deliveries: dict[str, int] | int) -> list[Message]:
    """Convert the entries of an XREADGROUP or XAUTOCLAIM reply; counts come per ID or
    as one."""
    if not isinstance(entries, list):
        raise TypeError(f"expected a list of stream entries, got {entries!r}")
    messages = []
    for entry in entries:
        entry_id, fields = entry
        if fields is None:
            continue  # deleted while pending (Redis 6 style); Redis 7 lists these apart
        # decode_responses=True gives str keys and values: check the shape, not fields
        if not isinstance(entry_id, str) or not isinstance(fields, dict):
            raise TypeError(f"expected a decoded stream entry, got {entry!r}")
        count = (
            deliveries if isinstance(deliveries, int) else deliveries.get(entry_id, 1)
        )
        messages.append(Message(entry_id, fields, count, fields.get(TASK_FIELD, "")))
    return messages


def read_entries(reply: object) -> object:
    """The entries of a one-stream XREADGROUP reply: [[stream, entries]], or empty."""
    if not reply:
        return []
    if not isinstance(reply, list) or len(reply) != 1:
        raise TypeError(f"expected a one-stream XREADGROUP reply, got {reply!r}")
    _stream, entries = reply[0]
    return entries


def decode_payload(message: Message) -> dict[str, Any]:
    """The payload as keyword arguments for the task."""
    raw = message.fields.get(PAYLOAD_FIELD)
    if raw is None:
        raise InvalidMessageError("entry has no payload field")
    try:
        payload = orjson.loads(raw)  # the dispatcher admits only 64-bit integers
    except orjson.JSONDecodeError:
        raise InvalidMessageError("payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidMessageError("payload is not a JSON object")
    return payload


def encode_result(value: Any) -> str:
    """A task's return value as stored JSON; anything else can never be stored."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _encode_slowly(value)


def _encode_slowly(value: Any) -> str:
    """The json module: slower, but it takes integers beyond 64 bits, unlike orjson."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMessageError(f"result is not JSON: {error}") from None


def results_key(stream: str, entry_id: str) -> str:
    """The hash holding the result of `entry_id` (the dispatcher reads the same key)."""
    return f"{stream}:results:{int(entry_id.split('-', 1)[0]) // RESULT_BUCKET_MS}"


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """An entry ID as a comparable (milliseconds, sequence) pair."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
