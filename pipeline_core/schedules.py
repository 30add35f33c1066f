"""Periodic tasks' schedules: `{tasks}:schedules`, a hash of each periodic task's next
tick (Unix ms, Redis's clock), its last tick and the entry that tick wrote.

Every consumer that loads a periodic task ticks it (consumer/clock.py), any number at
once: TICK enqueues a tick only if the schedule still says what the caller read
(compare-and-set in one script), so each tick is enqueued once. The caller computes the
next tick after now (a cron expression is parsed in Python, by croniter), so ticks
missed while no consumer ran are not replayed: the first consumer back enqueues one.
"""

from dataclasses import dataclass

from redis.commands.core import Script
from redis.typing import EncodableT

from pipeline_core.connection import Client
from pipeline_core.keys import Queue


def schedules_key(queue: Queue) -> str:
    return queue.key("schedules")


# KEYS: schedules, stream. ARGV: task name, the next tick the caller read ("" if
# none), the tick after now, then the entry's fields. Returns the entry ID written, 0
# (first sight: scheduled only), or nil (another consumer moved it, or not due).
TICK = """#!lua
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (current or '') ~= ARGV[2] then return nil end
if not current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms < tonumber(current) then return nil end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. ':last', current,
           ARGV[1] .. ':last_id', id)
return id
"""


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    next_ms: int
    last_ms: int | None
    last_id: str | None


def tick_script(client: Client) -> Script:
    return client.register_script(TICK)


def tick(
    script: Script,
    queue: Queue,
    name: str,
    read: tuple[int | None, int],
    fields: list[EncodableT],
) -> str | None:
    """Enqueue `name`'s tick if it is due and nobody did (`read`: the next tick as
    read, or None; the tick after now). The entry ID written, or None."""
    current, following = read
    expected = "" if current is None else str(current)
    args: list[EncodableT] = [name, expected, following, *fields]
    written = script(keys=[schedules_key(queue), queue.stream], args=args)
    return written if isinstance(written, str) else None


def next_ticks(client: Client, queue: Queue, names: list[str]) -> list[int | None]:
    """The next tick of each named schedule (None: never seen)."""
    if not names:
        return []
    values = client.hmget(schedules_key(queue), names)
    return [int(v) if isinstance(v, str) and v.isdigit() else None for v in values]


def read_schedules(client: Client, queue: Queue) -> list[Schedule]:
    """Every schedule, for `pipeline status`."""
    raw = {
        name: value
        for name, value in client.hgetall(schedules_key(queue)).items()
        if isinstance(name, str) and isinstance(value, str)
    }
    found = []
    for name, value in sorted(raw.items()):
        if ":" in name or not value.isdigit():
            continue
        last = raw.get(f"{name}:last")
        found.append(Schedule(name, int(value),
                              int(last) if last and last.isdigit() else None,
                              raw.get(f"{name}:last_id")))  # fmt: skip
    return found
