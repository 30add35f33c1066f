"""Sending tasks from Python, without HTTP: `Sender` (one round trip a send), `TaskRef`
(status, result, cancel), and the script both it and `POST /dispatch` with an
Idempotency-Key use to write tasks.

Without a key, a send is one MULTI of XADDs (all or none), after a backlog check as the
dispatcher makes it: the backlog read at most every BACKLOG_REFRESH_S, plus what this
sender wrote since (a burst may pass MAX_BACKLOG by what it sends in that time).

Why Lua with a key: the backlog check, the key's record and the entries must be one
step. A MULTI cannot refuse on what it reads, nor answer a replay with the first
request's IDs; a script does it all atomically, in one round trip, and writes all of the
entries or none (the shebang makes Redis refuse it whole at maxmemory, before any XADD).
"""

import hashlib
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import RedisError
from redis.commands.core import Script
from redis.typing import EncodableT

from pipeline_core import partitions, task_state
from pipeline_core.connection import (
    NO_RETRY,
    Client,
    RedisSettings,
    connect,
    redis_from_env,
)
from pipeline_core.delayed import delayed_key, delayed_seq_key, delayed_tasks_key
from pipeline_core.env import number
from pipeline_core.group_state import read_backlog
from pipeline_core.keys import Queue, queue_from_env
from pipeline_core.payloads import PayloadLimits, check_payloads, limits_from_env
from pipeline_core.replication import Replicas, write_then_wait
from pipeline_core.task_state import TaskStatus
from pipeline_core.timing import MAX_COUNTDOWN_S, NOW, Timing
from pipeline_core.wire import TASK_NAME, TASK_NAME_RULE, encode_entry

IDEMPOTENCY_KEY_RULE = "must be 1 to 255 printable ASCII characters"
BACKLOG_REFRESH_S = 0.1

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


class TaskFailedError(SendError):
    """The task ended in the dead-letter stream; `reason` says why."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} is dead: {reason}")
        self.task_id, self.reason = task_id, reason


class TaskCancelledError(SendError):
    """The task was cancelled before it ran."""


class PartlySentError(SendError):
    """PARTITIONS > 1: a partition's write failed after earlier partitions' writes;
    `task_ids` were written (a retry with the same idempotency key writes the rest)."""

    def __init__(self, task_ids: list[str], error: Exception) -> None:
        super().__init__(f"{len(task_ids)} tasks were sent before: {error!r}")
        self.task_ids = task_ids


class TaskUnknownError(SendError):
    """Redis knows nothing of the task (never sent here, or its record expired)."""


@dataclass(frozen=True, slots=True)
class SenderSettings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    queue: Queue = field(default_factory=Queue)
    limits: PayloadLimits = field(default_factory=PayloadLimits)
    max_backlog: int = 1_000_000
    idempotency_ttl_s: int = 86_400
    max_countdown_s: float = MAX_COUNTDOWN_S
    socket_timeout_s: float = 5.0


def sender_settings_from_env(env: Mapping[str, str]) -> SenderSettings:
    """The services' variables: REDIS_URL (and the rest of the Redis settings),
    STREAM, GROUP, MAX_BACKLOG, MAX_PAYLOAD_BYTES, ... IDEMPOTENCY_TTL_S."""
    d = SenderSettings()
    return SenderSettings(
        redis=redis_from_env(env),
        queue=queue_from_env(env),
        limits=limits_from_env(env),
        max_backlog=number(env, "MAX_BACKLOG", int, d.max_backlog, 1),
        idempotency_ttl_s=number(env, "IDEMPOTENCY_TTL_S", int, d.idempotency_ttl_s, 1),
        max_countdown_s=number(env, "MAX_COUNTDOWN_S", float, d.max_countdown_s, 1),
    )


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


def _entry_id(reply: object) -> str:
    if not isinstance(reply, str):
        raise TypeError(f"XADD answered {reply!r}, expected an entry ID string")
    return reply


class TaskRef:
    """A sent task: `.id`, and its status, result and cancellation by that ID."""

    __slots__ = ("id", "sender")

    def __init__(self, task_id: str, sender: "Sender") -> None:
        self.id, self.sender = task_id, sender

    def __repr__(self) -> str:
        return f"TaskRef({self.id!r})"

    def status(self) -> dict[str, Any]:
        """The same JSON as GET /tasks/<id>."""
        return {**self._status().as_json(), "id": self.id}

    def result(self, timeout_s: float) -> Any:
        """The task's return value once it succeeded; raises TaskFailedError (dead),
        TaskCancelledError, or TimeoutError past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        pause_s = 0.01
        while True:
            found = self._status()
            if found.state in ("succeeded", "dead", "cancelled"):
                return _outcome(found)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"task {self.id} is {found.state} after {timeout_s:g} s"
                )
            time.sleep(min(pause_s, remaining))
            pause_s = min(pause_s * 2, 0.5)

    def cancel(self) -> bool:
        """Cancel the task if it has not started (queued, delayed or retrying): True if
        this call cancelled it."""
        _, queue, entry_id = partitions.locate(self.sender.queue, self.id)
        found = task_state.cancel(self.sender.client, queue, entry_id)
        return found is not None and found.cancelled_now

    def _status(self) -> TaskStatus:
        _, queue, entry_id = partitions.locate(self.sender.queue, self.id)
        found = task_state.status(self.sender.client, queue, entry_id)
        if found is None:
            raise TaskUnknownError(f"no task {self.id} (unknown, or expired)")
        return found


def _outcome(found: TaskStatus) -> Any:
    body = found.as_json()
    if found.state == "dead":
        raise TaskFailedError(body["id"], body.get("error", "dead-lettered"))
    if found.state == "cancelled":
        raise TaskCancelledError(f"task {body['id']} was cancelled")
    return body.get("result")


class Sender:
    """Sends tasks by name. Connects at the first send, from `settings` (or the
    environment, as the services read it)."""

    def __init__(
        self, settings: SenderSettings | None = None, client: Client | None = None
    ) -> None:
        self.settings = settings or sender_settings_from_env(os.environ)
        self._client = client
        self._script: Script | None = None
        self._backlog, self._backlog_read_s = 0, float("-inf")
        self._turns = itertools.count()  # where a send starts over the partitions

    @property
    def queue(self) -> Queue:
        return self.settings.queue

    @property
    def max_countdown_s(self) -> float:
        return self.settings.max_countdown_s

    @property
    def client(self) -> Client:
        if self._client is None:
            # No retries: a retried XADD whose reply was lost would write it twice.
            self._client = connect(
                self.settings.redis,
                socket_timeout_s=self.settings.socket_timeout_s,
                retry=NO_RETRY,
                client_name="sender",
                queue=self.queue,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._script = None, None

    def send(
        self,
        task: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        timing: Timing = NOW,
    ) -> TaskRef:
        """One task, one round trip."""
        [ref] = self.send_many(
            task, [payload], idempotency_key=idempotency_key, timing=timing
        )
        return ref

    def send_many(
        self,
        task: str,
        payloads: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timing: Timing = NOW,
    ) -> list[TaskRef]:
        """Tasks in order, all or none (with PARTITIONS > 1: round-robin over the
        partitions, all or none per partition; see PartlySentError); checked before
        anything is written."""
        if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
            raise ValueError(f"task name {task!r}: must be {TASK_NAME_RULE}")
        encoded = check_payloads(list(payloads), self.settings.limits)
        entries = [encode_entry(task, payload) for payload in encoded]
        request = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            text = "\n".join([task, repr(timing), *encoded])
            request = hashlib.sha256(text.encode()).hexdigest()
        count = self.queue.partitions
        start = next(self._turns) % count
        if idempotency_key is not None:
            start = partitions.of_key(idempotency_key, count)
        task_ids = [""] * len(entries)
        for index, positions in partitions.spread(len(entries), start, count).items():
            share = [entries[position] for position in positions]
            part = partitions.parts(self.queue)[index]
            try:
                sent = self._send(part, share, (idempotency_key, request), timing)
            except RedisError as error:
                if not any(task_ids):
                    raise
                raise PartlySentError([t for t in task_ids if t], error) from error
            for position, sent_id in zip(positions, sent, strict=True):
                task_ids[position] = partitions.task_id(self.queue, index, sent_id)
        return [TaskRef(task_id, self) for task_id in task_ids]

    def _send(
        self,
        queue: Queue,
        entries: list[dict[EncodableT, EncodableT]],
        once: tuple[str | None, str | None],
        timing: Timing,
    ) -> list[str]:
        """One partition's share (or all of them): its task IDs."""
        key, request = once
        if key is None and timing.plain:
            return self._write(queue, entries)
        idempotency = None
        if key is not None and request is not None:
            record = idempotency_record(queue, "python", key)
            idempotency = (record, request, self.settings.idempotency_ttl_s)
        if self._script is None:
            self._script = send_script(self.client)
        limit = self.settings.max_backlog
        return write_tasks(
            self._script, queue, entries, limit, idempotency, timing
        ).entry_ids

    def _write(
        self, queue: Queue, entries: list[dict[EncodableT, EncodableT]]
    ) -> list[str]:
        """All of them in one MULTI, unless the backlog (as of at most
        BACKLOG_REFRESH_S ago, plus our writes since) has no room."""
        now = time.monotonic()
        if now - self._backlog_read_s >= BACKLOG_REFRESH_S:
            self._backlog = read_backlog(self.client, self.queue)
            self._backlog_read_s = now
        limit = self.settings.max_backlog
        if self._backlog + len(entries) > limit:
            raise BacklogFullError(self._backlog, limit)
        if len(entries) == 1:  # one XADD is all or nothing by itself
            entry_ids = [_entry_id(self.client.xadd(queue.stream, entries[0]))]
        else:
            with self.client.pipeline(transaction=True) as pipe:
                for fields in entries:
                    pipe.xadd(queue.stream, fields)
                entry_ids = [_entry_id(reply) for reply in pipe.execute()]
        self._backlog += len(entry_ids)
        return entry_ids

    def task(self, task_id: str) -> TaskRef:
        """A reference to a task sent before (by anyone), by its ID."""
        partitions.locate(self.queue, task_id)  # InvalidTaskIdError if malformed
        return TaskRef(task_id, self)
