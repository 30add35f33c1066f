"""`pipeline consumers prune`: remove consumers that are gone and hold nothing (from
every partition's group, with PARTITIONS > 1)."""

import argparse
from typing import Any

from rich.console import Console

from cli import output, partitioned
from cli.settings import Settings, connect_cli
from cli.status import require_group
from pipeline_core import all_partitions, consumers
from pipeline_core.connection import Client
from pipeline_core.group_state import read_group_state


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
    deleted = all_partitions.prune(client, settings.queue, names, args.idle_ms)
    if args.json:
        output.as_json({"pruned": deleted})
    else:
        console.print(f"pruned {len(deleted)}: {', '.join(deleted) or '-'}")
    return 0


def prunable(client: Client, settings: Settings, idle_ms: int) -> list[dict[str, Any]]:
    """Consumers idle for `idle_ms` or more with nothing pending (in every
    partition, with PARTITIONS > 1: idle the shortest of their idle times there)."""
    states = []
    for part in partitioned.settings_of(settings):
        states.append(read_group_state(client, part.queue))
        require_group(states[-1], part)
    merged = all_partitions.merged_consumers(states)
    return [
        {"name": c.name, "idle_s": c.idle_s}
        for c in consumers.prunable(merged, idle_ms)
    ]
