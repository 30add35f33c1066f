"""`pipeline consumers prune`: remove consumers that are gone and hold nothing."""

import argparse
from typing import Any

from rich.console import Console

from cli import output
from cli.settings import Settings, connect_cli
from cli.status import require_group
from pipeline_core.connection import Client
from pipeline_core.group_state import read_group_state

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


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    housekeeping = sub.add_parser("consumers", help="consumer housekeeping")
    actions = housekeeping.add_subparsers(dest="action", required=True)
    prune_parser = actions.add_parser(
        "prune", help="remove idle consumers holding nothing"
    )
    prune_parser.add_argument(
        "--idle-ms", type=int, default=3_600_000, help="idle at least (1 h)"
    )
    prune_parser.add_argument("--dry-run", action="store_true", help="only list them")
    prune_parser.add_argument("--json", action="store_true", help="JSON for scripts")
    prune_parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    client = connect_cli(settings)
    candidates = prunable(client, settings, args.idle_ms)
    names = [c["name"] for c in candidates]
    if args.dry_run and args.json:
        output.as_json(candidates)
        return 0
    if args.dry_run or not names:
        rows = [(c["name"], output.duration(c["idle_s"])) for c in candidates]
        output.table(f"Would prune {len(rows)} consumers (idle, nothing pending)",
                     ("consumer", "idle"), rows, console)  # fmt: skip
        return 0
    deleted = prune(client, settings, names, args.idle_ms)
    if args.json:
        output.as_json({"pruned": deleted})
    else:
        console.print(f"pruned {len(deleted)}: {', '.join(deleted) or '-'}")
    return 0


def prunable(client: Client, settings: Settings, idle_ms: int) -> list[dict[str, Any]]:
    """Consumers idle for `idle_ms` or more with nothing pending."""
    state = read_group_state(client, settings.queue)
    require_group(state, settings)
    return [
        {"name": c.name, "idle_s": c.idle_s}
        for c in state.consumers
        if c.pending == 0 and c.idle_s * 1000 >= idle_ms
    ]


def prune(
    client: Client, settings: Settings, names: list[str], idle_ms: int
) -> list[str]:
    """Delete each named consumer if, at that instant, it still qualifies."""
    script = client.register_script(PRUNE)
    q = settings.queue
    return [
        name
        for name in names
        if script(keys=[q.stream], args=[q.group, name, idle_ms]) == 1
    ]
