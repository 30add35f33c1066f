"""Turns a /dispatch request body into a DispatchRequest, or names the field that is
wrong."""

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from dispatcher.errors import InvalidPayloadError
from dispatcher.settings import Settings
from pipeline_core.timing import NOW, Timing, TimingError, make_timing
from pipeline_core.wire import ENTRY_ID, TASK_NAME, TASK_NAME_RULE, encode_payload

FIELDS = ("task", "payloads", "num_messages", "delay", "countdown", "run_at",
          "expires_s", "partition_key")  # fmt: skip
PARTITION_KEY_RULE = "must be a string of 1 to 255 printable ASCII characters"
DEFAULT_TASK = "demo"


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    task: str
    payloads: list[str]  # each one encoded once, here, as the entry's payload field
    delay_s: float
    timing: Timing = NOW  # countdown / run_at / expires_s
    # With PARTITIONS > 1 every message of the request goes to this key's partition.
    partition_key: str | None = None


def decode_json(raw: bytes | bytearray, max_values: int) -> Any:
    """Parse a request body; NaN and Infinity (also as 1e400) are refused: they are not
    JSON. A body of over `max_values` values is refused before it is parsed: every
    value but the first follows a '[', '{' or ',', so counting those (in strings too,
    an overestimate) bounds what parsing would build, whatever the body's shape."""
    values = 1 + raw.count(b"[") + raw.count(b"{") + raw.count(b",")
    if values > max_values:
        rule = f"holds over {max_values} JSON values (counting '[', '{{' and ',')"
        raise InvalidPayloadError("body", rule, 413)
    try:
        return json.loads(
            raw,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_int64,
        )
    except (ValueError, RecursionError):
        raise InvalidPayloadError("body", "must be valid JSON") from None


def parse_dispatch(body: Any, settings: Settings) -> DispatchRequest:
    """Check every rule of the /dispatch body; the first broken one raises
    InvalidPayloadError."""
    if not isinstance(body, dict):
        raise InvalidPayloadError("body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidPayloadError(
            unknown[0], f"unknown field; allowed: {', '.join(FIELDS)}"
        )
    if ("num_messages" in body) == ("payloads" in body):
        raise InvalidPayloadError(
            "num_messages", "give exactly one of num_messages or payloads"
        )
    if "payloads" in body:
        if "task" not in body:
            raise InvalidPayloadError("task", "is required with payloads")
        payloads = _payloads(body["payloads"], settings)
    else:
        count = _count(body["num_messages"], settings.max_messages)
        payloads = [encode_payload({"seq": seq}) for seq in range(count)]
    delay_s = _delay(body.get("delay", 0), len(payloads), settings.max_pacing_s)
    timing = _timing(body, settings.max_countdown_s)
    if delay_s > 0 and not timing.plain:
        field = next(f for f in ("countdown", "run_at", "expires_s") if f in body)
        raise InvalidPayloadError(field, WITH_PACING)
    task = _task(body.get("task", DEFAULT_TASK))
    key = _partition_key(body.get("partition_key"))
    return DispatchRequest(task, payloads, delay_s, timing, key)


WITH_PACING = (
    "cannot go with a delay: delay paces writes now, countdown/run_at/expires_s "
    "set when tasks run"
)


def _timing(body: dict[str, Any], max_countdown_s: float) -> Timing:
    """countdown (seconds), run_at (RFC 3339 or Unix seconds), expires_s: the rules
    are pipeline_core/timing.py's, shared with Python's send_with."""
    run_at = body.get("run_at")
    if isinstance(run_at, str):
        run_at = _rfc3339(run_at)
    try:
        return make_timing(
            body.get("countdown"), run_at, body.get("expires_s"), max_countdown_s
        )
    except TimingError as error:
        raise InvalidPayloadError(error.field, error.rule) from None


def _rfc3339(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        rule = "must be an RFC 3339 time with its offset (2026-12-02T15:00:00Z)"
        rule += " or Unix seconds"
        raise InvalidPayloadError("run_at", rule)
    return when


def message_count(body: Any, limit: int) -> int | None:
    """How many messages the body asks for, when it says so plainly (a valid
    num_messages, or a payloads list of 1 to `limit`); else None."""
    if not isinstance(body, dict):
        return None
    count: Any = body.get("num_messages")
    if "payloads" in body:
        count = len(body["payloads"]) if isinstance(body["payloads"], list) else None
    return count if _is_int(count) and 1 <= count <= limit else None


def check_entry_id(entry_id: str) -> str:
    if not ENTRY_ID.fullmatch(entry_id):
        raise InvalidPayloadError(
            "entry_id", "must look like <milliseconds>-<sequence>"
        )
    return entry_id


def _partition_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise InvalidPayloadError("partition_key", PARTITION_KEY_RULE)
    if not all(" " <= c <= "~" for c in value):
        raise InvalidPayloadError("partition_key", PARTITION_KEY_RULE)
    return value


def _task(value: Any) -> str:
    if not isinstance(value, str) or not TASK_NAME.fullmatch(value):
        raise InvalidPayloadError("task", f"must be {TASK_NAME_RULE}")
    return value


def _count(value: Any, limit: int) -> int:
    if not _is_int(value) or not 1 <= value <= limit:
        raise InvalidPayloadError(
            "num_messages", f"must be an integer from 1 to {limit}"
        )
    return int(value)


def _payloads(value: Any, settings: Settings) -> list[str]:
    """Each payload checked (an object, not too deep, not too large) and encoded."""
    limit = settings.max_messages
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise InvalidPayloadError(
            "payloads", f"must be a list of 1 to {limit} JSON objects"
        )
    encoded = []
    for index, payload in enumerate(value):
        field = f"payloads[{index}]"
        if not isinstance(payload, dict):
            raise InvalidPayloadError(field, "must be a JSON object")
        if _deeper_than(payload, settings.max_payload_depth):
            raise InvalidPayloadError(
                field, f"nests objects and lists over {settings.max_payload_depth} deep"
            )
        text = _encode(payload, field)
        if len(text) > settings.max_payload_bytes:
            rule = f"is over {settings.max_payload_bytes} bytes as JSON"
            raise InvalidPayloadError(field, rule, status=413)
        encoded.append(text)
    return encoded


def _encode(payload: dict[str, Any], field: str) -> str:
    try:
        return encode_payload(payload)
    except orjson.JSONEncodeError as error:  # a lone surrogate ("\ud800") in a string
        raise InvalidPayloadError(field, f"cannot be UTF-8 JSON: {error}") from None


def _deeper_than(payload: dict[str, Any], limit: int) -> bool:
    """Whether objects and lists nest more than `limit` levels (the payload is 1)."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack += [(c, depth + 1) for c in children if isinstance(c, dict | list)]
    return False


def _delay(value: Any, count: int, max_pacing_s: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidPayloadError("delay", "must be a number of seconds >= 0")
    pacing_s = float(value) * (count - 1)
    if pacing_s > max_pacing_s:
        raise InvalidPayloadError(
            "delay",
            f"pacing would take {pacing_s:g} s, over the limit of {max_pacing_s:g} s",
        )
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int64(text: str) -> int:
    """Integers a consumer reads back exactly (orjson: 64 bits; beyond, a float)."""
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise InvalidPayloadError("body", "integers must fit in 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a double")
    return value
