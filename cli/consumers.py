"""`pipeline consumers list`: the group's consumers; `pipeline consumers prune`: remove
consumers that are gone and hold nothing. With PARTITIONS > 1 over every partition's
group: one row per consumer name, pruned from every group where it holds nothing."""

import argparse
from typing import Any

from rich.console import Console

from cli import output, partitioned
from cli.settings import Settings, connect_cli
from cli.status import require_group
from pipeline_core import all_partitions, consumers
from pipeline_core.connection import Client
from pipeline_core.group_state import ConsumerState, read_group_state


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
    list_parser = actions.add_parser(
        "list", help="consumers with their pending entries and idle time"
    )
    list_parser.add_argument("--json", action="store_true", help="JSON for scripts")
    list_parser.set_defaults(run=run_list)


def run_list(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """`pipeline consumers list`: one row per consumer (every partition's, merged)."""
    found = merged(connect_cli(settings), settings)
    if args.json:
        output.as_json(
            [{"name": c.name, "pending": c.pending, "idle_s": c.idle_s} for c in found]
        )
        return 0
    rows = [(c.name, c.pending, output.duration(c.idle_s)) for c in found]
    output.table(f"Consumers ({len(rows)})", ("consumer", "pending", "idle"), rows,
                 console)  # fmt: skip
    return 0


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
    return [
        {"name": c.name, "idle_s": c.idle_s}
        for c in consumers.prunable(merged(client, settings), idle_ms)
    ]


def merged(client: Client, settings: Settings) -> tuple[ConsumerState, ...]:
    """The group's consumers: with PARTITIONS > 1 one per name over every partition's
    group, its pending entries summed and its idle time the shortest."""
    states = []
    for part in partitioned.settings_of(settings):
        states.append(read_group_state(client, part.queue))
        require_group(states[-1], part)
    return all_partitions.merged_consumers(states)
