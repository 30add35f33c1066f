"""Writes entries onto the stream: the encoding side of the wire format.

An entry has two fields: `task` (a name) and `payload` (a JSON object). The entry ID
records the enqueue time, so no timestamp field is added.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis
from redis.typing import EncodableT, FieldT

from dispatcher.errors import DispatcherError

TASK_FIELD = "task"
PAYLOAD_FIELD = "payload"


class PublishInterruptedError(DispatcherError):
    """Redis failed during a paced dispatch; `entry_ids` were written before."""

    def __init__(self, entry_ids: list[str]) -> None:
        super().__init__(f"publishing stopped after {len(entry_ids)} entries")
        self.entry_ids = entry_ids


def encode_payload(payload: dict[str, Any]) -> str:
    """A payload as the entry carries it: compact JSON (integers fit 64 bits: checked
    when the request was read)."""
    return orjson.dumps(payload).decode()


def encode_entry(task: str, payload: str) -> dict[FieldT, EncodableT]:
    """The stream fields of one entry, its payload already encoded."""
    return {TASK_FIELD: task, PAYLOAD_FIELD: payload}


# A results hash per hour of enqueue time, field = entry ID (the consumer writes them).
RESULT_BUCKET_MS = 3_600_000


def results_key(stream: str, entry_id: str) -> str:
    """The hash holding the result of `entry_id` (the consumer writes the same key)."""
    return f"{stream}:results:{int(entry_id.split('-', 1)[0]) // RESULT_BUCKET_MS}"


def publish(
    client: redis.Redis,
    stream: str,
    task: str,
    payloads: Sequence[str],
) -> list[str]:
    """Append every payload in one MULTI/EXEC: the whole batch or none of it."""
    with client.pipeline(transaction=True) as pipe:
        for payload in payloads:
            pipe.xadd(stream, encode_entry(task, payload))
        return [_entry_id(reply) for reply in pipe.execute()]


def publish_paced(
    client: redis.Redis,
    stream: str,
    task: str,
    payloads: Sequence[str],
    delay_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Append the payloads one at a time, `delay_s` apart (the seed's pacing)."""
    entry_ids: list[str] = []
    for index, payload in enumerate(payloads):
        if index:
            sleep(delay_s)
        try:
            entry_ids.append(
                _entry_id(client.xadd(stream, encode_entry(task, payload)))
            )
        except redis.RedisError as error:
            raise PublishInterruptedError(entry_ids) from error
    return entry_ids


def _entry_id(reply: object) -> str:
    if not isinstance(reply, str):
        raise TypeError(f"XADD answered {reply!r}, expected an entry ID string")
    return reply
