"""Consumer housekeeping for every operator tool: which consumers may go, and their
removal, safe against deleting pending work."""

from pipeline_core.connection import Client
from pipeline_core.group_state import ConsumerState
from pipeline_core.keys import Queue

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


def prunable(consumers: tuple[ConsumerState, ...], idle_ms: int) -> list[ConsumerState]:
    """Consumers idle for `idle_ms` or more with nothing pending."""
    return [c for c in consumers if c.pending == 0 and c.idle_s * 1000 >= idle_ms]


def prune(client: Client, queue: Queue, names: list[str], idle_ms: int) -> list[str]:
    """Delete each named consumer if, at that instant, it still qualifies."""
    script = client.register_script(PRUNE)
    return [
        name
        for name in names
        if script(keys=[queue.stream], args=[queue.group, name, idle_ms]) == 1
    ]
