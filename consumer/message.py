"""Message: one stream entry as the consumer sees it (with its delivery count), built
from raw replies in one place; and the encoding of task results."""

import json
import time
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

    def expired(self) -> bool:
        """Past the time by which it had to start (expires_s), by the wall clock (read
        only for an entry with an expiry: most have none, and this is asked per
        entry)."""
        given = self.fields.get(EXPIRES_FIELD)
        if not (given and given.isdigit()):
            return False
        return int(given) < time.time() * 1000

    @property
    def enqueued_s(self) -> float:
        """The enqueue time (seconds since the epoch) that the entry ID records."""
        return entry_ms(self.entry_id) / 1000


def to_messages(entries: object, deliveries: dict[str, int] | int) -> list[Message]:
    """Convert the entries of an XREADGROUP or XAUTOCLAIM reply; counts come per ID or
    as one. Each entry's fields come as Redis sent them, [name, value, ...] (our
    clients' XREADGROUP: pipeline_core.connection.AS_SENT), or as redis-py's dict. An
    entry deleted while pending (fields None, as Redis 6 reports it) is left out."""
    if not isinstance(entries, list):
        raise TypeError(f"expected a list of stream entries, got {entries!r}")
    counts = deliveries if isinstance(deliveries, dict) else {}
    once = deliveries if isinstance(deliveries, int) else 1
    messages = []
    for entry_id, fields in entries:
        if type(fields) is list:
            fields = _as_dict(fields)
        elif fields is None:
            continue
        if not isinstance(entry_id, str) or not isinstance(fields, dict):
            raise TypeError(f"expected a decoded stream entry, got {entry_id!r}")
        message = _new(Message)
        _set_entry_id(message, entry_id)
        _set_fields(message, fields)
        _set_deliveries(message, counts.get(entry_id, once))
        _set_task(message, fields.get(TASK_FIELD, ""))
        messages.append(message)
    return messages


# A frozen dataclass's __init__ sets each field through object.__setattr__, looked up
# field by field: that cost more than the rest of a read's work per entry. A reply's
# Messages are built through their slots' own setters instead, at about half the cost.
_new = object.__new__
_set_entry_id = vars(Message)["entry_id"].__set__
_set_fields = vars(Message)["fields"].__set__
_set_deliveries = vars(Message)["deliveries"].__set__
_set_task = vars(Message)["task"].__set__


def _as_dict(flat: list[Any]) -> dict[str, str]:
    """An entry's fields as Redis sends them, [name, value, ...], as a dict."""
    if len(flat) == 4:  # the usual entry (task, payload): a literal is the fastest
        return {flat[0]: flat[1], flat[2]: flat[3]}
    if len(flat) % 2:
        raise TypeError(f"expected names and values, got {flat!r}")
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=True))


def read_entries(reply: object) -> object:
    """The entries of a one-stream XREADGROUP reply: {stream: entries} (RESP3, as
    Redis sends it), [[stream, entries]] (RESP2, or redis-py's conversion), or empty
    (when nothing arrived within BLOCK)."""
    if not reply:
        return []
    if isinstance(reply, dict) and len(reply) == 1:
        [entries] = reply.values()
        return entries
    if not isinstance(reply, list) or len(reply) != 1:
        raise TypeError(f"expected a one-stream XREADGROUP reply, got {reply!r}")
    _stream, entries = reply[0]
    return entries


def encode_result(value: Any, limit_bytes: int) -> str:
    """A task's return value as stored JSON: finite numbers only, at most limit_bytes;
    anything else can never be stored (the entry is dead-lettered)."""
    text = "null" if value is None else _encode(value)  # None: what most tasks return
    if len(text) > limit_bytes:
        raise InvalidMessageError(f"result is over {limit_bytes} bytes as JSON")
    return text


def _encode(value: Any) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _encode_slowly(value)
    # orjson writes NaN and Infinity as null, silently: a null where the value is not
    # None is checked again by the json module, which refuses them.
    return _encode_slowly(value) if "null" in text else text


def _encode_slowly(value: Any) -> str:
    """The json module: slower, but strict about NaN and Infinity, and it takes
    integers beyond 64 bits, unlike orjson."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMessageError(f"result is not JSON: {error}") from None
