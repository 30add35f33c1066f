"""The script that writes tasks, for `POST /dispatch` with an Idempotency-Key or a due
time, and for Python's `Sender`; the refusals it makes; the idempotency records.

Why Lua: the backlog check, the key's record and the entries must be one step. A MULTI
cannot refuse on what it reads, nor answer a replay with the first request's IDs; a
script does it all atomically, in one round trip, and writes all of the entries or none
(the shebang makes Redis refuse it whole at maxmemory, before any XADD).
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.commands.core import Script
from redis.typing import EncodableT

from pipeline_core.connection import Client
from pipeline_core.delayed import delayed_key, delayed_seq_key, delayed_tasks_key
from pipeline_core.keys import Queue
from pipeline_core.replication import Replicas, write_then_wait
from pipeline_core.timing import NOW, Timing

IDEMPOTENCY_KEY_RULE = "must be 1 to 255 printable ASCII characters"

# KEYS: stream, delayed set, delayed tasks, delayed ID counter[, idempotency record].
# ARGV: group, max backlog, record TTL (ms), the request's hash, when ("now", "in" with
# ms to wait, or "at" a Unix time in ms), expires_s in ms (0: never), then per entry:
# its field count, then its fields. Returns {"ok", task IDs...}, {"replay", IDs...},
# {"conflict"} (the key came with another request) or {"backlog", n} (refused: n wait).
# A task due later waits in the delayed set (pipeline_core/delayed.py) under an ID of
# its own, <now ms>-1<18 digits>: never an entry ID of the stream.
SEND = """#!lua
local record = KEYS[5]
if record then
  local seen = redis.call('HMGET', record, 'request', 'ids')
  if seen[1] then
    if seen[1] ~= ARGV[4] then return {'conflict'} end
    local out = {'replay'}
    for id in string.gmatch(seen[2], '[^,]+') do out[#out + 1] = id end
    return out
  end
end
local backlog = 0
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and not groups.err then
  backlog = redis.call('XLEN', KEYS[1])  -- no group yet: everything waits
  for _, row in ipairs(groups) do
    local f = {}
    for i = 1, #row, 2 do f[row[i]] = row[i + 1] end
    if f['name'] == ARGV[1] then
      if f['lag'] then backlog = f['lag'] + f['pending'] end  -- lag nil: XLEN bounds it
    end
  end
end
local count, i = 0, 8
while i <= #ARGV do count = count + 1; i = i + 1 + 2 * tonumber(ARGV[i]) end
if backlog + count > tonumber(ARGV[2]) then return {'backlog', tostring(backlog)} end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = now_ms
if ARGV[5] == 'in' then due = now_ms + tonumber(ARGV[6]) end
if ARGV[5] == 'at' then due = math.max(now_ms, tonumber(ARGV[6])) end
local expires = tonumber(ARGV[7])
local ids = {}
i = 8
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local fields = {unpack(ARGV, i + 1, i + 2 * n)}
  i = i + 1 + 2 * n
  if expires > 0 then
    fields[#fields + 1] = 'expires'
    fields[#fields + 1] = string.format('%d', due + expires)
  end
  if due > now_ms then
    local seq = redis.call('INCR', KEYS[4])
    local id = string.format('%d-1%018d', now_ms, seq)
    fields[#fields + 1] = 'id'
    fields[#fields + 1] = id
    redis.call('ZADD', KEYS[2], due, id)
    redis.call('HSET', KEYS[3], id, cjson.encode(fields))
    ids[#ids + 1] = id
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
end
if record then
  redis.call('HSET', record, 'request', ARGV[4], 'ids', table.concat(ids, ','))
  redis.call('PEXPIRE', record, ARGV[3])
end
local out = {'ok'}
for _, id in ipairs(ids) do out[#out + 1] = id end
return out
"""


class SendError(Exception):
    """Base of what a send raises on purpose (a payload mistake is a PayloadError)."""


class BacklogFullError(SendError):
    """MAX_BACKLOG entries already wait: nothing was written (HTTP's 429)."""

    def __init__(self, backlog: int, limit: int) -> None:
        super().__init__(f"{backlog} entries wait, the limit is {limit} (MAX_BACKLOG)")
        self.backlog, self.limit = backlog, limit


class IdempotencyConflictError(SendError):
    """The idempotency key was used before with another request (HTTP's 422)."""


def check_idempotency_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
        raise ValueError(f"idempotency key {IDEMPOTENCY_KEY_RULE}")
    return key


def idempotency_record(queue: Queue, scope: str, key: str) -> str:
    """Where a key's first answer is kept: hashed (any printable key makes a safe
    name), per scope (a token's fingerprint: two clients never share a key)."""
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    return queue.key(f"idem:{digest}")


@dataclass(frozen=True, slots=True)
class Written:
    """What the send script did: `entry_ids` written now, or `replayed` (the key's
    first request wrote them)."""

    entry_ids: list[str]
    replayed: bool = False


def send_script(client: Client) -> Script:
    """The send script, registered once per client (hashing it is not free)."""
    return client.register_script(SEND)


def write_tasks(
    script: Script,
    queue: Queue,
    entries: Sequence[Mapping[EncodableT, EncodableT]],
    max_backlog: int,
    idempotency: tuple[str, str, int] | None = None,
    timing: Timing = NOW,
    replicas: Replicas | None = None,
) -> Written:
    """Write `entries` (their stream fields) all or none, unless the backlog is full,
    now or later (`timing`); with `idempotency` = (record key, request hash, TTL in
    s), once per key. `entry_ids` are the task IDs (a delayed task's is its own).
    With `replicas`, WAIT follows the script on its connection: NotReplicatedError
    when too few confirm what it wrote (a replay wrote nothing: see confirm_replay)."""
    keys = [queue.stream, delayed_key(queue), delayed_tasks_key(queue)]
    keys += [delayed_seq_key(queue)] + ([idempotency[0]] if idempotency else [])
    record_ttl_ms = idempotency[2] * 1000 if idempotency else 0
    request = idempotency[1] if idempotency else ""
    args: list[EncodableT] = [queue.group, max_backlog, record_ttl_ms, request]
    args += timing.args()
    for fields in entries:
        args.append(len(fields))
        for name, value in fields.items():
            args += [name, value]
    reply, acked = _run(script, keys, args, replicas)
    if not isinstance(reply, list) or not reply:
        raise TypeError(f"send script answered {reply!r}")
    verdict, rest = str(reply[0]), [str(item) for item in reply[1:]]
    if verdict == "backlog":
        raise BacklogFullError(int(rest[0]), max_backlog)
    if verdict == "conflict":
        raise IdempotencyConflictError(
            "this idempotency key was used with another request"
        )
    if replicas is not None and verdict == "ok":
        replicas.check(acked, rest)
    return Written(rest, replayed=verdict == "replay")


def _run(
    script: Script, keys: list[str], args: list[EncodableT], replicas: Replicas | None
) -> tuple[object, int]:
    """The script's reply, and how many replicas confirmed it (WAIT; 0 without)."""
    if replicas is None:
        return script(keys=keys, args=args), 0
    client = script.registered_client
    [reply], acked = write_then_wait(
        client, lambda pipe: script(keys, args, client=pipe), replicas, False,
        key=keys[0],
    )  # fmt: skip
    return reply, acked


def confirm_replay(
    client: Client, record: str, ttl_s: int, replicas: Replicas, entry_ids: list[str]
) -> None:
    """A repeat of a key's request answers 202 only once its entries are confirmed on
    replicas: WAIT counts its own connection's writes, so the replay renews the key's
    record (PEXPIRE: a write, on the key written with the entries) and WAITs after
    it. NotReplicatedError when too few confirm (the retry may be retried again)."""
    _, acked = write_then_wait(
        client, lambda pipe: pipe.pexpire(record, ttl_s * 1000), replicas, False,
        key=record,
    )  # fmt: skip
    replicas.check(acked, entry_ids)


def checked_entry_id(reply: object) -> str:
    if not isinstance(reply, str):
        raise TypeError(f"XADD answered {reply!r}, expected an entry ID string")
    return reply
