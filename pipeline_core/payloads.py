"""The rules every payload obeys before it is written, from HTTP (`POST /dispatch`) or
from Python (`fn.send`): a JSON object, nested at most MAX_PAYLOAD_DEPTH deep, at most
MAX_PAYLOAD_BYTES encoded, JSON all through (no NaN, no lone surrogate, integers within
64 bits), and at most MAX_MESSAGES of them at once. A broken rule names its field."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline_core.env import number
from pipeline_core.wire import encode_payload


class PayloadError(ValueError):
    """A payload (or a batch of them) breaks a rule; `field` says which, `status` is the
    HTTP answer it gets (400, or 413 for one too large)."""

    def __init__(self, field: str, rule: str, status: int = 400) -> None:
        super().__init__(f"{field} {rule}")
        self.field, self.rule, self.status = field, rule, status


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    max_messages: int = 100_000
    max_payload_bytes: int = 64 * 1024  # one payload, encoded
    max_payload_depth: int = 32  # nesting of objects and lists in one payload


def limits_from_env(env: Mapping[str, str]) -> PayloadLimits:
    """MAX_MESSAGES, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH (the dispatcher's too)."""
    d = PayloadLimits()
    return PayloadLimits(
        max_messages=number(env, "MAX_MESSAGES", int, d.max_messages, 1),
        max_payload_bytes=number(env, "MAX_PAYLOAD_BYTES", int, d.max_payload_bytes, 2),
        max_payload_depth=number(env, "MAX_PAYLOAD_DEPTH", int, d.max_payload_depth, 1),
    )


def check_payloads(value: Any, limits: PayloadLimits) -> list[str]:
    """Each payload checked and encoded once (the entry's payload field), in order."""
    limit = limits.max_messages
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise PayloadError("payloads", f"must be a list of 1 to {limit} JSON objects")
    return [
        check_payload(payload, limits, f"payloads[{index}]")
        for index, payload in enumerate(value)
    ]


def check_payload(payload: Any, limits: PayloadLimits, field: str = "payload") -> str:
    """One payload checked and encoded."""
    if not isinstance(payload, dict):
        raise PayloadError(field, "must be a JSON object")
    if deeper_than(payload, limits.max_payload_depth):
        rule = f"nests objects and lists over {limits.max_payload_depth} deep"
        raise PayloadError(field, rule)
    text = _encode(payload, field)
    if len(text) > limits.max_payload_bytes:
        rule = f"is over {limits.max_payload_bytes} bytes as JSON"
        raise PayloadError(field, rule, status=413)
    return text


def deeper_than(payload: dict[str, Any], limit: int) -> bool:
    """Whether objects and lists nest more than `limit` levels (the payload is 1)."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack += [(c, depth + 1) for c in children if isinstance(c, dict | list)]
    return False


def _encode(payload: dict[str, Any], field: str) -> str:
    try:
        text = encode_payload(payload)
    except (orjson.JSONEncodeError, TypeError) as error:
        # A lone surrogate ("\ud800"), an integer past 64 bits, a value JSON has no
        # word for (a set, a datetime: from Python).
        raise PayloadError(field, f"cannot be UTF-8 JSON: {error}") from None
    # orjson writes NaN and Infinity as null, silently (HTTP bodies cannot hold them;
    # Python payloads can): a null is checked again by the json module, which refuses.
    if "null" in text:
        try:
            json.dumps(payload, allow_nan=False)
        except ValueError as error:
            raise PayloadError(field, f"cannot be JSON: {error}") from None
    return text
