"""One queue's key names. The stream is `STREAM` (default `tasks`); every other key of
the queue carries the stream's hash tag, so on Redis Cluster the whole queue lives in
one slot and its MULTI/EXEC blocks and Lua scripts never cross slots:

    tasks                     the stream (its own name hashes as the tag `tasks`)
    {tasks}:dead              dead letters (DEAD_LETTER_STREAM overrides)
    {tasks}:results:<minute>  results, one hash per minute of enqueue time

A stream whose name already holds a hash tag (`app{q1}`) is its own prefix:
`app{q1}:dead`, `app{q1}:results:<minute>`.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from redis.crc import key_slot

from pipeline_core.env import SettingsError, number, text
from pipeline_core.wire import entry_ms

# Results live in one hash per minute of enqueue time (field: the entry ID), so a
# batch's results go out in one HSET and a reader finds the hash from the entry ID
# alone. A hash expires RESULT_TTL_S after its last write: with minutes, a result lives
# its TTL plus about the spread of completion times within its minute, not an hour more.
RESULT_BUCKET_MS = 60_000
MAX_PARTITIONS = 64


def result_bucket(entry_id: str) -> int:
    """The minute of enqueue time whose hash holds the entry's result."""
    return entry_ms(entry_id) // RESULT_BUCKET_MS


def has_hash_tag(key: str) -> bool:
    """Whether Redis Cluster hashes only part of the key (a non-empty `{...}`)."""
    start = key.find("{")
    end = key.find("}", start + 1) if start > -1 else -1
    return end > start + 1


def slot(key: str) -> int:
    return key_slot(key.encode())


@functools.cache  # once per stream name: a result's key is built for every entry
def key_prefix(stream: str) -> str:
    """What every other key of the stream's queue starts with: the stream's hash tag."""
    return stream if has_hash_tag(stream) else "{" + stream + "}"


@dataclass(frozen=True, slots=True)
class Queue:
    """The names of one queue: its stream, its consumer group, and the keys beside."""

    stream: str = "tasks"
    group: str = "workers"
    dead_letter_stream: str = "{tasks}:dead"
    # PARTITIONS: above 1 the queue is that many streams, each a Queue of its own in
    # its own slot (pipeline_core/partitions.py); `stream` is then the base name.
    partitions: int = 1

    @property
    def prefix(self) -> str:
        return key_prefix(self.stream)

    def key(self, suffix: str) -> str:
        """A key of this queue in the stream's slot: `{tasks}:<suffix>`."""
        return f"{self.prefix}:{suffix}"

    def results_key(self, entry_id: str) -> str:
        """The hash holding the result of `entry_id` (its minute of enqueue time)."""
        return self.bucket_key(result_bucket(entry_id))

    def bucket_key(self, bucket: int) -> str:
        """The results hash of one minute of enqueue time (result_bucket)."""
        return self.key(f"results:{bucket}")

    @property
    def results_pattern(self) -> str:
        return self.key("results:*")

    @property
    def audit_key(self) -> str:
        """A hash only the dispatcher and operators write: the newest dead-letter ID
        they deleted (replay, purge), so deletions by anyone else show (alerts)."""
        return self.key("audit")

    def foreign_keys(self) -> list[str]:
        """Keys this queue names outside the stream's slot (a cluster refuses them)."""
        home = slot(self.stream)
        return [key for key in (self.dead_letter_stream,) if slot(key) != home]


def queue_from_env(env: Mapping[str, str]) -> Queue:
    """STREAM, GROUP and DEAD_LETTER_STREAM, shared by every process."""
    defaults = Queue()
    stream = text(env, "STREAM", defaults.stream)
    if slot(key_prefix(stream)) != slot(stream):
        raise SettingsError(
            f"STREAM {stream!r}: use '{{' and '}}' only around a hash tag, "
            "as in 'app{q1}'"
        )
    default_dead = f"{key_prefix(stream)}:dead"
    partitions = number(env, "PARTITIONS", int, 1, 1, MAX_PARTITIONS)
    if partitions > 1 and (has_hash_tag(stream) or "DEAD_LETTER_STREAM" in env):
        raise SettingsError(
            f"PARTITIONS={partitions}: each partition names its own streams, so STREAM "
            "must hold no '{' '}' hash tag and DEAD_LETTER_STREAM must be unset"
        )
    return Queue(
        stream=stream,
        group=text(env, "GROUP", defaults.group),
        dead_letter_stream=text(env, "DEAD_LETTER_STREAM", default_dead),
        partitions=partitions,
    )


def check_cluster_slots(queue: Queue) -> None:
    """On Redis Cluster every key of the queue must share the stream's slot."""
    for key in queue.foreign_keys():
        raise SettingsError(
            f"DEAD_LETTER_STREAM {key!r} is in another hash slot than STREAM "
            f"{queue.stream!r}, which Redis Cluster refuses in one script: name it "
            f"'{queue.prefix}:dead' (or leave DEAD_LETTER_STREAM unset)"
        )
