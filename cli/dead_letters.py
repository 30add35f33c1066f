"""Dead letters in Redis: find (a paged scan, filtered), show one, replay, purge.
Used by `pipeline dead` and, for the same operations, by anything later."""

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from cli.settings import CliError, Settings
from pipeline_core.connection import Client
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


def scan(client: Client, stream: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Every entry of a stream, oldest first, a page at a time."""
    start = "-"
    while True:
        page = stream_entries(client.xrange(stream, min=start, count=PAGE))
        yield from page
        if len(page) < PAGE:
            return
        start = f"({page[-1][0]}"


def letters(
    client: Client,
    settings: Settings,
    task: str | None = None,
    error: str | None = None,
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Dead letters, oldest first, filtered by task, error text and IDs."""
    if ids:
        found = [one(client, settings, dead_id) for dead_id in ids]
        return [d for d in found if _matches(d, task, error)]
    return [
        {"dead_id": dead_id, **fields}
        for dead_id, fields in scan(client, settings.queue.dead_letter_stream)
        if _matches(fields, task, error)
    ]


def one(client: Client, settings: Settings, dead_id: str) -> dict[str, Any]:
    """One dead letter, read alone (XRANGE ID ID)."""
    dead = settings.queue.dead_letter_stream
    found = ENTRY_ID.fullmatch(dead_id) and stream_entries(
        client.xrange(dead, dead_id, dead_id)
    )
    if not found:
        raise CliError(f"no dead letter {dead_id} in {dead!r}")
    return {"dead_id": dead_id, **found[0][1]}


def show(client: Client, settings: Settings, dead_id: str) -> dict[str, Any]:
    letter = one(client, settings, dead_id)
    with contextlib.suppress(ValueError):  # a payload that was never JSON stays text
        letter["payload"] = json.loads(letter.get("payload", "null"))
    return letter


def replay(
    client: Client, settings: Settings, chosen: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Move each dead letter back onto the stream as a new entry (fresh deliveries)."""
    script = client.register_script(REPLAY)
    keys = [settings.queue.stream, settings.queue.dead_letter_stream]
    moved = []
    for letter in chosen:
        new_id = script(keys=keys, args=[letter["dead_id"], *DEAD_LETTER_FIELDS])
        if isinstance(new_id, str):
            moved.append({"dead_id": letter["dead_id"], "entry_id": new_id})
    return moved


def purge(client: Client, settings: Settings, chosen: list[dict[str, Any]]) -> int:
    ids = [letter["dead_id"] for letter in chosen]
    removed = 0
    for first in range(0, len(ids), 500):
        batch = ids[first : first + 500]
        removed += int(client.xdel(settings.queue.dead_letter_stream, *batch))
    return removed


def _matches(fields: dict[str, str], task: str | None, error: str | None) -> bool:
    if task and fields.get("task") != task:
        return False
    return not error or error.lower() in fields.get("error", "").lower()
