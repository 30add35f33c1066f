"""The wire format, written by the dispatcher and read by the consumers and the CLI.

An entry has two fields: `task` (a name) and `payload` (a JSON object, compact). Its
ID records the enqueue time in milliseconds, so no timestamp field is added. A dead
letter is the entry's fields plus DEAD_LETTER_FIELDS; a replay strips those again.
"""

import re
from typing import Any

import orjson
from redis.typing import EncodableT, FieldT

TASK_FIELD = "task"
PAYLOAD_FIELD = "payload"
# The fingerprint of the token that dispatched the entry (dispatcher/auth.py): who may
# read its result and status. Absent on an anonymous (loopback) run.
OWNER_FIELD = "owner"
# The task's ID when it differs from the entry's (a task re-queued keeps its first ID);
# absent on a task written once, whose ID is its entry ID.
TASK_ID_FIELD = "id"
ATTEMPT_FIELD = "attempt"  # a retry's entry: the attempts its task made before it
EXPIRES_FIELD = "expires"  # Unix ms past which the task must not start (expires_s)
TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
TASK_NAME_RULE = "a string of letters, digits, '_', '.', ':' or '-' (1-128)"
ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
# What the consumer adds to an entry's fields when it moves it to the dead-letter
# stream: the entry's ID, the reason, how many deliveries it had, and who gave up.
DEAD_LETTER_FIELDS = ("source_id", "error", "deliveries", "consumer")

Fields = dict[str, str]


class WireError(ValueError):
    """An entry or payload breaks the wire format (it can never be processed)."""


def encode_payload(payload: dict[str, Any]) -> str:
    """A payload as the entry carries it: compact JSON (orjson; integers must fit 64
    bits, which the dispatcher checks when it reads a request)."""
    return orjson.dumps(payload).decode()


def encode_entry(
    task: str, payload: str, owner: str | None = None
) -> dict[FieldT, EncodableT]:
    """The stream fields of one entry (for XADD), its payload already encoded."""
    fields: dict[FieldT, EncodableT] = {TASK_FIELD: task, PAYLOAD_FIELD: payload}
    if owner:
        fields[OWNER_FIELD] = owner
    return fields


def owner_field(entry_id: str) -> str:
    """The field beside an entry's result, in its results hash, naming its owner."""
    return f"{entry_id}:owner"


def decode_payload(raw: str | None) -> dict[str, Any]:
    """The payload field as keyword arguments for the task."""
    if raw is None:
        raise WireError("entry has no payload field")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WireError("payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WireError("payload is not a JSON object")
    return payload


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """An entry ID as a comparable (milliseconds, sequence) pair."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def entry_ms(entry_id: str) -> int:
    """The enqueue time (ms since the epoch) an entry ID records."""
    return int(entry_id.split("-", 1)[0])


def stream_entries(reply: object) -> list[tuple[str, Fields]]:
    """The (entry ID, fields) pairs of an XRANGE-style reply from a decoding client.
    redis-py types replies loosely; they are narrowed here, once. An entry deleted
    while pending (fields None, as Redis 6 reports it) is left out."""
    if not isinstance(reply, list):
        raise TypeError(f"expected a list of stream entries, got {reply!r}")
    pairs = []
    for entry_id, fields in reply:
        if fields is None:
            continue
        if not isinstance(entry_id, str) or not isinstance(fields, dict):
            raise TypeError(f"expected a decoded stream entry, got {entry_id!r}")
        pairs.append((entry_id, fields))
    return pairs


def dead_letter_fields(
    fields: Fields, source_id: str, error: str, deliveries: int, consumer: str
) -> Fields:
    """A dead letter: the entry's own fields, then why and by whom it was given up
    (ours win over an entry field of the same name)."""
    facts = {"source_id": source_id, "error": error, "deliveries": str(deliveries)}
    return {**fields, **facts, "consumer": consumer}


def as_sent(value: str) -> bytes:
    """Text read from Redis, as the bytes it was: undecodable bytes came in as surrogate
    escapes (pipeline_core.connection), and hiredis's command packer would refuse
    them as text."""
    return value.encode("utf-8", "surrogateescape")


def printable(value: str) -> str:
    """Text fit for a terminal or a page: bytes that were never UTF-8 (read as
    surrogate escapes) shown as backslash escapes instead of failing the output."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def replayed_fields(letter: Fields) -> Fields:
    """The entry a dead letter came from: its fields without DEAD_LETTER_FIELDS."""
    return {k: v for k, v in letter.items() if k not in DEAD_LETTER_FIELDS}
