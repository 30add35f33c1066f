"""Dead letters in Redis, for every reader (`pipeline dead`, the console): a paged scan
with filters, one letter read alone, an atomic replay, and purge."""

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.wire import DEAD_LETTER_FIELDS, ENTRY_ID, stream_entries

PAGE = 1000  # entries a XRANGE reply carries while scanning

# Why Lua: a replay must move the entry exactly once. A MULTI of XADD + XDEL would add
# a second copy when two operators replay the same dead letter at once; here the XADD
# happens only if this call's XDEL removed it. KEYS: stream, dead-letter stream.
# ARGV: the dead letter's ID, then the names of the fields to strip.
REPLAY = """
local entry = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1]
if not entry or redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then
  return false
end
local strip, fields = {}, {}
for i = 2, #ARGV do strip[ARGV[i]] = true end
for i = 1, #entry[2], 2 do
  if not strip[entry[2][i]] then
    fields[#fields + 1] = entry[2][i]
    fields[#fields + 1] = entry[2][i + 1]
  end
end
return redis.call('XADD', KEYS[1], '*', unpack(fields))
"""


class NoSuchDeadLetterError(LookupError):
    """A dead-letter ID names no entry of the dead-letter stream."""


def scan(
    client: Client, stream: str, newest_first: bool = False, after: str | None = None
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every entry of a stream, a page at a time (oldest first, or newest first),
    starting just past the entry ID `after` when given (a cursor)."""
    low, high = ("-", "+") if after is None else (f"({after}", f"({after}")
    while True:
        if newest_first:
            page = stream_entries(
                client.xrevrange(stream, max=high, min="-", count=PAGE)
            )
        else:
            page = stream_entries(client.xrange(stream, min=low, max="+", count=PAGE))
        yield from page
        if len(page) < PAGE:
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
    keys = [queue.stream, queue.dead_letter_stream]
    moved = []
    for letter in chosen:
        new_id = script(keys=keys, args=[letter["dead_id"], *DEAD_LETTER_FIELDS])
        if isinstance(new_id, str):
            moved.append({"dead_id": letter["dead_id"], "entry_id": new_id})
    return moved


def purge(client: Client, queue: Queue, chosen: list[dict[str, Any]]) -> int:
    ids = [letter["dead_id"] for letter in chosen]
    removed = 0
    for first in range(0, len(ids), 500):
        batch = ids[first : first + 500]
        removed += int(client.xdel(queue.dead_letter_stream, *batch))
    return removed


def matches(fields: dict[str, str], task: str | None, error: str | None) -> bool:
    if task and fields.get("task") != task:
        return False
    return not error or error.lower() in fields.get("error", "").lower()
