"""Message: one stream entry as the consumer sees it, built from raw replies in one
place.

The wire format (written by the dispatcher): fields `task` (a name) and `payload` (a
JSON object). The entry ID is the enqueue time in milliseconds."""

import json
from dataclasses import dataclass
from typing import Any

from consumer.errors import InvalidMessageError

TASK_FIELD = "task"
PAYLOAD_FIELD = "payload"


@dataclass(frozen=True, slots=True)
class Message:
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # how many times Redis has delivered this entry, this time included

    @property
    def task(self) -> str:
        return self.fields.get(TASK_FIELD, "")

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
        if not isinstance(entry_id, str) or not _is_str_dict(fields):
            raise TypeError(f"expected a decoded stream entry, got {entry!r}")
        count = (
            deliveries if isinstance(deliveries, int) else deliveries.get(entry_id, 1)
        )
        messages.append(Message(entry_id, fields, count))
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
        payload = json.loads(raw)
    except ValueError:
        raise InvalidMessageError("payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidMessageError("payload is not a JSON object")
    return payload


def encode_result(value: Any) -> str:
    """A task's return value as stored JSON; anything else can never be stored."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMessageError(f"result is not JSON: {error}") from None


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """An entry ID as a comparable (milliseconds, sequence) pair."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _is_str_dict(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )
