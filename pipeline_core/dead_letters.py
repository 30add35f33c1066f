"""Dead letters in Redis, for every reader (`pipeline dead`, the console): a paged scan
with filters, one letter read alone, an atomic replay, and purge."""

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.wire import (
    ATTEMPT_FIELD,
    DEAD_LETTER_FIELDS,
    ENTRY_ID,
    stream_entries,
)

PAGE = 1000  # entries a XRANGE reply carries while scanning

DEFAULT_MAX_AGE_S = 14 * 86_400  # DEAD_LETTER_MAX_AGE_S: dead letters kept this long
AUDIT_FIELD = "dead_deleted"  # in Queue.audit_key: dead letters we deleted, ever

# Every deletion of dead letters by us (replay, purge, trimming by age) counts itself in
# Queue.audit_key, in the same script. Consumers only append dead letters and cannot
# write that hash, so dead letters gone from the stream beyond that count (entries ever
# added - length - count) were deleted by someone else: XADD ... MAXLEN 0 with a stolen
# consumer password, which no ACL refuses (docs/security.md). The state reader reports
# them; an alert fires.

# Why Lua: a replay must move the entry exactly once. A MULTI of XADD + XDEL would add
# a second copy when two operators replay the same dead letter at once; here the XADD
# happens only if this call's XDEL removed it. The shebang makes Redis refuse the whole
# script at maxmemory (rather than fail at the XADD, after the XDEL). The replayed
# entry keeps the task's ID (its `id` field) with fresh attempts, and the task's record
# (in its results hash, named from the ID: the same slot) forgets it was dead and
# learns its new entry. KEYS: stream, dead-letter stream, audit hash. ARGV: the dead
# letter's ID, the results hashes' prefix, RESULT_TTL_S, then the fields to strip.
REPLAY = (
    """#!lua
local entry = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1]
if not entry or redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then
  return false
end
redis.call('HINCRBY', KEYS[3], '"""
    + AUDIT_FIELD
    + """', 1)
local strip, fields, task_id = {}, {}, nil
for i = 4, #ARGV do strip[ARGV[i]] = true end
for i = 1, #entry[2], 2 do
  if entry[2][i] == 'id' then task_id = entry[2][i + 1] end
  if not strip[entry[2][i]] then
    fields[#fields + 1] = entry[2][i]
    fields[#fields + 1] = entry[2][i + 1]
  end
end
local new_id = redis.call('XADD', KEYS[1], '*', unpack(fields))
local ms = task_id and string.match(task_id, '^(%d+)-%d+$')
if ms then
  local record = ARGV[2] .. string.format('%d', math.floor(tonumber(ms) / 60000))
  redis.call('HDEL', record, task_id .. ':dead', task_id .. ':failed',
             task_id .. ':state')
  redis.call('HSET', record, task_id .. ':entry', new_id)
  redis.call('EXPIRE', record, ARGV[3])
end
return new_id
"""
)
# Stripped on replay: why it died, and its attempts (it starts afresh).
REPLAY_STRIPS = (*DEAD_LETTER_FIELDS, ATTEMPT_FIELD)
RESULT_TTL_S = 86_400  # the record's TTL after a replay (RESULT_TTL_S's default)


class NoSuchDeadLetterError(LookupError):
    """A dead-letter ID names no entry of the dead-letter stream."""


def scan(
    client: Client,
    stream: str,
    newest_first: bool = False,
    after: str | None = None,
    bounds: tuple[bool, int] = (False, PAGE),
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every entry of a stream, a page at a time (oldest first, or newest first),
    starting just past the entry ID `after` when given (a cursor). `bounds`: whether
    the entry `after` itself comes first (the partitions' merge needs it), and how
    many entries a reply carries."""
    inclusive, size = bounds
    start = f"{after}" if inclusive else f"({after}"
    low, high = ("-", "+") if after is None else (start, start)
    while True:
        if newest_first:
            page = stream_entries(
                client.xrevrange(stream, max=high, min="-", count=size)
            )
        else:
            page = stream_entries(client.xrange(stream, min=low, max="+", count=size))
        yield from page
        if len(page) < size:
            return
        low, high = f"({page[-1][0]}", f"({page[-1][0]}"


def letters(
    client: Client,
    queue: Queue,
    task: str | None = None,
    error: str | None = None,
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Dead letters, oldest first, filtered by task, error text and IDs."""
    if ids:
        found = [one(client, queue, dead_id) for dead_id in ids]
        return [d for d in found if matches(d, task, error)]
    return [
        {"dead_id": dead_id, **fields}
        for dead_id, fields in scan(client, queue.dead_letter_stream)
        if matches(fields, task, error)
    ]


def one(client: Client, queue: Queue, dead_id: str) -> dict[str, Any]:
    """One dead letter, read alone (XRANGE ID ID)."""
    dead = queue.dead_letter_stream
    found = ENTRY_ID.fullmatch(dead_id) and stream_entries(
        client.xrange(dead, dead_id, dead_id)
    )
    if not found:
        raise NoSuchDeadLetterError(f"no dead letter {dead_id} in {dead!r}")
    return {"dead_id": dead_id, **found[0][1]}


def show(client: Client, queue: Queue, dead_id: str) -> dict[str, Any]:
    """One dead letter with its payload parsed (text if it was never JSON)."""
    letter = one(client, queue, dead_id)
    with contextlib.suppress(ValueError):
        letter["payload"] = json.loads(letter.get("payload", "null"))
    return letter


def replay(
    client: Client, queue: Queue, chosen: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Move each dead letter back onto the stream as a new entry (fresh deliveries);
    one that another replay moved first is left out."""
    script = client.register_script(REPLAY)
    keys = [queue.stream, queue.dead_letter_stream, queue.audit_key]
    moved = []
    prefix = queue.key("results:")
    for letter in chosen:
        args = [letter["dead_id"], prefix, RESULT_TTL_S, *REPLAY_STRIPS]
        new_id = script(keys=keys, args=args)
        if isinstance(new_id, str):
            moved.append({"dead_id": letter["dead_id"], "entry_id": new_id})
    return moved


# Deleting frees memory, so it runs at maxmemory too (allow-oom); the count it adds is
# one hash field. KEYS: dead-letter stream, audit hash. ARGV: IDs. Returns how many.
PURGE = (
    """#!lua flags=allow-oom
local removed = redis.call('XDEL', KEYS[1], unpack(ARGV))
if removed > 0 then
  redis.call('HINCRBY', KEYS[2], '"""
    + AUDIT_FIELD
    + """', removed)
end
return removed
"""
)

# Trimming by age, by Redis's clock (TIME), counted like any deletion of ours.
# KEYS: dead-letter stream, audit hash. ARGV: DEAD_LETTER_MAX_AGE_S.
TRIM_BY_AGE = (
    """#!lua flags=allow-oom
local now = redis.call('TIME')
local floor = (tonumber(now[1]) - tonumber(ARGV[1])) * 1000
local removed = redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', floor))
if removed > 0 then
  redis.call('HINCRBY', KEYS[2], '"""
    + AUDIT_FIELD
    + """', removed)
end
return removed
"""
)


def trim_by_age(client: Client, queue: Queue, max_age_s: int) -> int:
    """Delete the dead letters older than `max_age_s`; how many went."""
    script = client.register_script(TRIM_BY_AGE)
    keys = [queue.dead_letter_stream, queue.audit_key]
    return int(script(keys=keys, args=[max_age_s]))


def purge(client: Client, queue: Queue, chosen: list[dict[str, Any]]) -> int:
    """Delete dead letters for good, counted (AUDIT_FIELD)."""
    ids = [letter["dead_id"] for letter in chosen]
    script = client.register_script(PURGE)
    keys = [queue.dead_letter_stream, queue.audit_key]
    removed = 0
    for first in range(0, len(ids), 500):
        removed += int(script(keys=keys, args=ids[first : first + 500]))
    return removed


def matches(fields: dict[str, str], task: str | None, error: str | None) -> bool:
    if task and fields.get("task") != task:
        return False
    return not error or error.lower() in fields.get("error", "").lower()
