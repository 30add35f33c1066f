"""Tasks that run later: delayed dispatches (countdown, run_at) and retries waiting for
their backoff. They wait outside the stream, so they hold no worker and no pending-list
entry (Redis clamps a future delivery time to now: a long wait cannot live there):

  {tasks}:delayed         sorted set: task ID -> when it is due (ms, Redis's clock)
  {tasks}:delayed:tasks   hash: task ID -> its entry's fields (JSON list)

Consumers promote what is due onto the stream (PROMOTE, from their clock thread): one
script moves each task exactly once however many consumers run it at once, by Redis's
clock (TIME), never theirs. The promoted entry carries the task's ID (`id`) and its
attempts so far (`attempt`), so the ID is stable across re-queues, and the task's record
learns its new entry ID (`<id>:entry` beside its result).
"""

import json
from dataclasses import dataclass

from redis.commands.core import Script
from redis.typing import EncodableT

from pipeline_core.connection import Client
from pipeline_core.keys import Queue

PROMOTE_BATCH = 500  # tasks one PROMOTE moves at most (one script: keep it short)
DELAYED_SEQ_BASE = "1"  # delayed task IDs: <ms>-1<18 digits>, apart from entry IDs


def delayed_key(queue: Queue) -> str:
    return queue.key("delayed")


def delayed_tasks_key(queue: Queue) -> str:
    return queue.key("delayed:tasks")


def delayed_seq_key(queue: Queue) -> str:
    """A counter: the sequence part of delayed tasks' IDs."""
    return queue.key("delayed:seq")


def results_prefix(queue: Queue) -> str:
    """What a task's results hash is named after (Queue.results_key), for scripts that
    compute it from the task ID (the same hash tag, so the same slot)."""
    return queue.key("results:")


# KEYS: delayed set, delayed tasks, stream. ARGV: batch, results prefix, RESULT_TTL_S.
# Returns how many moved. No shebang flags: at maxmemory Redis refuses it whole and
# the tasks stay delayed, never half moved.
PROMOTE = """#!lua
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, ARGV[1])
for _, id in ipairs(due) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    local entry = redis.call('XADD', KEYS[3], '*', unpack(cjson.decode(data)))
    local minute = math.floor(tonumber(string.match(id, '^(%d+)-')) / 60000)
    local record = ARGV[2] .. string.format('%d', minute)
    redis.call('HSET', record, id .. ':entry', entry)
    redis.call('EXPIRE', record, ARGV[3])
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #due
"""


# A failed attempt's retry, scheduled: the entry leaves the pending list for the delayed
# set (it waits holding nothing), its record notes the failure, in one step. Only while
# the entry is still pending (a late or repeated call finds it gone and does nothing);
# the XACK comes last, so a refused write leaves the entry pending, never lost.
# KEYS: stream, delayed set, delayed tasks, the task's results hash. ARGV: group,
# entry ID, task ID, wait (ms), RESULT_TTL_S, the failure's record, then the new entry's
# fields. Returns when it is due (ms), or nil.
RETRY = """#!lua
if not redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1] then
  return nil
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = now_ms + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], due, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], cjson.encode({unpack(ARGV, 7)}))
redis.call('HSET', KEYS[4], ARGV[3] .. ':failed', ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return due
"""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A task waiting outside the stream: delayed, or a retry waiting for its
    backoff (attempt > 0)."""

    task_id: str
    due_ms: int
    fields: dict[str, str]

    @property
    def attempt(self) -> int:
        return int(self.fields.get("attempt", "0"))


def retry_script(client: Client) -> Script:
    return client.register_script(RETRY)


def schedule_retry(
    script: Script,
    queue: Queue,
    pending: tuple[str, str],
    wait_ms: int,
    records: tuple[int, str],
    fields: list[EncodableT],
) -> int | None:
    """Re-queue a failed attempt (`pending`: its entry ID and task ID) to run in
    `wait_ms`; `records`: RESULT_TTL_S and the failure's record. When it is due (ms),
    or None if the entry was no longer pending (another consumer had finished it)."""
    entry_id, task_id = pending
    keys = [queue.stream, delayed_key(queue), delayed_tasks_key(queue)]
    keys.append(queue.results_key(task_id))
    ttl_s, failure = records
    args: list[EncodableT] = [queue.group, entry_id, task_id, wait_ms, ttl_s, failure]
    due = script(keys=keys, args=[*args, *fields])
    return int(due) if due is not None else None


def promote_script(client: Client) -> Script:
    return client.register_script(PROMOTE)


def promote(script: Script, queue: Queue, result_ttl_s: int) -> int:
    """Move every task due by now onto the stream (up to PROMOTE_BATCH); how many."""
    keys = [delayed_key(queue), delayed_tasks_key(queue), queue.stream]
    args: list[EncodableT] = [PROMOTE_BATCH, results_prefix(queue), result_ttl_s]
    return int(script(keys=keys, args=args))


def waiting(client: Client, queue: Queue, count: int = 100) -> list[Waiting]:
    """The tasks waiting, the earliest due first (for `pipeline delayed`)."""
    due = _scored(client.zrange(delayed_key(queue), 0, count - 1, withscores=True))
    if not due:
        return []
    data = client.hmget(delayed_tasks_key(queue), [task_id for task_id, _ in due])
    found = []
    for (task_id, score), raw in zip(due, data, strict=True):
        flat = json.loads(raw) if isinstance(raw, str) else []
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        found.append(Waiting(task_id, int(score), fields))
    return found


def overview(client: Client, queue: Queue) -> tuple[int, int | None]:
    """How many tasks wait, and when the earliest is due (ms), in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zcard(delayed_key(queue))
        pipe.zrange(delayed_key(queue), 0, 0, withscores=True)
        count, first = pipe.execute()
    earliest = _scored(first)
    return int(count), int(earliest[0][1]) if earliest else None


def _scored(reply: object) -> list[tuple[str, float]]:
    """A ZRANGE ... WITHSCORES reply, narrowed."""
    if not isinstance(reply, list):
        return []
    return [(str(member), float(score)) for member, score in reply]
