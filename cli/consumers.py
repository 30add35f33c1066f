"""Consumer housekeeping: remove consumers that are gone and hold nothing."""

from typing import Any

import redis

from cli.settings import Settings
from cli.state import group_info

# Why Lua: XGROUP DELCONSUMER also deletes the consumer's pending entries, which could
# then never be claimed. "Idle long enough and holding nothing" must be checked and
# acted on in one step: a MULTI cannot branch on what XINFO CONSUMERS says.
# KEYS: stream. ARGV: group, consumer, minimum idle (ms). Returns 1 if deleted.
PRUNE = """
local rows = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, row in ipairs(rows) do
  local facts = {}
  for i = 1, #row, 2 do facts[row[i]] = row[i + 1] end
  if facts['name'] == ARGV[2] then
    if facts['pending'] == 0 and facts['idle'] >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"""


def prunable(
    client: redis.Redis, settings: Settings, idle_ms: int
) -> list[dict[str, Any]]:
    """Consumers idle for `idle_ms` or more with nothing pending."""
    group_info(client, settings)
    return [
        {"name": c["name"], "idle_s": c["idle"] / 1000}
        for c in client.xinfo_consumers(settings.stream, settings.group)
        if c["pending"] == 0 and c["idle"] >= idle_ms
    ]


def prune(
    client: redis.Redis, settings: Settings, names: list[str], idle_ms: int
) -> list[str]:
    """Delete each named consumer if, at that instant, it still qualifies."""
    script = client.register_script(PRUNE)
    keys = [settings.stream]
    return [
        name
        for name in names
        if script(keys=keys, args=[settings.group, name, idle_ms]) == 1
    ]
