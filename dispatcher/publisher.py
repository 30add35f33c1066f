"""Writes entries onto the stream, in the wire format of pipeline_core.wire."""

import time
from collections.abc import Callable, Sequence

import redis

from dispatcher.errors import DispatcherError
from pipeline_core.connection import Client
from pipeline_core.wire import encode_entry


class PublishInterruptedError(DispatcherError):
    """Redis failed during a paced dispatch; `entry_ids` were written before."""

    def __init__(self, entry_ids: list[str]) -> None:
        super().__init__(f"publishing stopped after {len(entry_ids)} entries")
        self.entry_ids = entry_ids


def publish(
    client: Client,
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
    client: Client,
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
            reply = client.xadd(stream, encode_entry(task, payload))
        except redis.RedisError as error:
            raise PublishInterruptedError(entry_ids) from error
        entry_ids.append(_entry_id(reply))
    return entry_ids


def _entry_id(reply: object) -> str:
    if not isinstance(reply, str):
        raise TypeError(f"XADD answered {reply!r}, expected an entry ID string")
    return reply
