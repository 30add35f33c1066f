"""Dead letters: list, show, replay onto the stream, purge."""

import contextlib
import json
from typing import Any

import redis

from cli.replies import entries
from cli.settings import CliError, Settings

# The fields the consumer adds to a dead letter; a replay strips them again.
DEAD_LETTER_FIELDS = ("source_id", "error", "deliveries", "consumer")

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


def letters(
    client: redis.Redis,
    settings: Settings,
    task: str | None = None,
    error: str | None = None,
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Dead letters, oldest first, filtered by task, error text and IDs."""
    found = []
    for dead_id, fields in entries(client.xrange(settings.dead_letter_stream)):
        if task and fields.get("task") != task:
            continue
        if error and error.lower() not in fields.get("error", "").lower():
            continue
        if ids and dead_id not in ids:
            continue
        found.append({"dead_id": dead_id, **fields})
    if ids and len(found) < len(ids):
        missing = sorted(set(ids) - {letter["dead_id"] for letter in found})
        raise CliError(
            f"no dead letter {', '.join(missing)} in {settings.dead_letter_stream!r}"
        )
    return found


def show(client: redis.Redis, settings: Settings, dead_id: str) -> dict[str, Any]:
    [letter] = letters(client, settings, ids=[dead_id])
    with contextlib.suppress(ValueError):  # a payload that was never JSON stays text
        letter["payload"] = json.loads(letter.get("payload", "null"))
    return letter


def replay(
    client: redis.Redis, settings: Settings, chosen: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Move each dead letter back onto the stream as a new entry (fresh deliveries)."""
    script = client.register_script(REPLAY)
    moved = []
    for letter in chosen:
        keys = [settings.stream, settings.dead_letter_stream]
        new_id = script(keys=keys, args=[letter["dead_id"], *DEAD_LETTER_FIELDS])
        if isinstance(new_id, str):
            moved.append({"dead_id": letter["dead_id"], "entry_id": new_id})
    return moved


def purge(client: redis.Redis, settings: Settings, chosen: list[dict[str, Any]]) -> int:
    ids = [letter["dead_id"] for letter in chosen]
    removed = 0
    for first in range(0, len(ids), 500):
        removed += int(
            client.xdel(settings.dead_letter_stream, *ids[first : first + 500])
        )
    return removed
