"""The ack's commands: results into their per-minute hashes and the XACK of their
entries, in one MULTI/EXEC, so a result exists exactly when its entry is acknowledged
(consumer.outcomes sends them, waited for or ahead)."""

from collections.abc import Sequence

from redis.typing import EncodableT

from consumer.message import Message
from consumer.settings import Settings
from pipeline_core.connection import Client
from pipeline_core.keys import result_bucket
from pipeline_core.task_state import CANCELS
from pipeline_core.wire import OWNER_FIELD, owner_field


def store_and_ack(
    client: Client,
    settings: Settings,
    done: list[tuple[Message, str]],
    unrun: Sequence[Message] = (),
    state: str = "cancelled",
) -> int:
    """Results into their per-minute hashes and XACK of their entries, in one
    MULTI/EXEC: a result exists exactly when its entry is acknowledged. `unrun`
    entries (cancelled, or expired) are acknowledged in the same way, their record
    saying `state` (a cancel request is removed). A few commands a batch. Returns how
    many entries the XACK removed from the pending list (fewer: others had
    acknowledged them already)."""
    with client.pipeline(transaction=True) as pipe:
        for command in ack_commands(settings, done, unrun, state):
            pipe.execute_command(*command)
        acked: int = pipe.execute()[-1]
    return acked


def ack_commands(
    settings: Settings,
    done: list[tuple[Message, str]],
    unrun: Sequence[Message] = (),
    state: str = "cancelled",
) -> list[tuple[EncodableT, ...]]:
    """store_and_ack's commands, to go inside one MULTI/EXEC; the XACK last."""
    queue = settings.queue
    # Results by minute of enqueue time (the hash they go to): a batch's share one.
    # Each hash's fields and values go flat, as HSET takes them.
    buckets: dict[int, list[EncodableT]] = {}
    records = [(m, "", result) for m, result in done]
    records += [(m, ":state", state) for m in unrun]
    for message, suffix, value in records:
        task_id = message.task_id
        bucket = result_bucket(task_id)
        items = buckets.get(bucket)
        if items is None:
            items = buckets[bucket] = []
        items += (task_id + suffix, value)
        owner = message.fields.get(OWNER_FIELD)
        if owner:  # only its owner (and operators) may read it: dispatcher/auth.py
            items += (owner_field(task_id), owner)
    commands: list[tuple[EncodableT, ...]] = []
    for bucket, items in buckets.items():
        key = queue.bucket_key(bucket)
        commands.append(("HSET", key, *items))
        # Kept that long after the last result written into it.
        commands.append(("EXPIRE", key, settings.result_ttl_s))
    if unrun and state == "cancelled":
        commands.append(("ZREM", queue.key(CANCELS), *(m.task_id for m in unrun)))
    ids = (m.entry_id for m, _, _ in records)
    commands.append(("XACK", queue.stream, queue.group, *ids))
    return commands
