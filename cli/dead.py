"""`pipeline dead list|show|replay|purge`: the dead-letter stream for people. With
PARTITIONS > 1 every partition's, a dead letter's ID naming its partition
(p<partition>-<entry ID>); a replay puts each back onto its own partition's stream."""

import argparse
import sys
from typing import Any

from rich.console import Console

from cli import output
from cli.settings import CliError, Settings, connect_cli
from pipeline_core import dead_partitions
from pipeline_core.connection import Client


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = sub.add_parser("dead", help="dead letters: list, show, replay, purge")
    dead = actions.add_subparsers(dest="action", required=True)
    show = dead.add_parser("show", help="one dead letter, with its payload")
    show.add_argument("id")
    chosen = []
    for action, text in (("list", "dead letters with reason and deliveries"),
                         ("replay", "put dead letters back on the stream"),
                         ("purge", "delete dead letters for good")):  # fmt: skip
        parser = dead.add_parser(action, help=text)
        if action != "list":
            parser.add_argument("ids", nargs="*", metavar="ID", help="dead-letter IDs")
            parser.add_argument("--all", action="store_true", help="every dead letter")
        parser.add_argument("--task", help="only this task's")
        parser.add_argument("--error", help="only those whose error contains this text")
        chosen.append(parser)
    chosen[1].add_argument(
        "--dry-run", action="store_true", help="only show what would move"
    )
    chosen[2].add_argument("--yes", action="store_true", help="no confirmation prompt")
    for parser in (show, *chosen):
        parser.add_argument("--json", action="store_true", help="JSON for scripts")
        parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    client = connect_cli(settings)
    if args.action == "show":
        letter = dead_partitions.show(client, settings.queue, args.id)
        output.as_json(letter) if args.json else output.pretty_json(letter, console)
        return 0
    ids = getattr(args, "ids", None) or None
    if args.action != "list" and not (ids or args.task or args.error or args.all):
        raise CliError(
            f"say which dead letters to {args.action}: IDs, --task, --error or --all"
        )
    chosen = dead_partitions.letters(client, settings.queue, args.task, args.error, ids)
    if args.action == "list":
        return _list(chosen, args.json, console)
    if args.action == "replay":
        return _replay(client, settings, chosen, args, console)
    return _purge(client, settings, chosen, args, console)


def _list(chosen: list[dict[str, Any]], as_json: bool, console: Console) -> int:
    if as_json:
        output.as_json(chosen)
        return 0
    rows = [(d["dead_id"], d.get("task"), d.get("deliveries"), d.get("source_id"),
             d.get("consumer"), d.get("error", "")[:80]) for d in chosen]  # fmt: skip
    columns = ("dead ID", "task", "deliveries", "source ID", "consumer", "error")
    output.table(f"Dead letters ({len(chosen)})", columns, rows, console)
    return 0


def _replay(client: Client, settings: Settings, chosen: list[dict[str, Any]],
            args: argparse.Namespace, console: Console) -> int:  # fmt: skip
    stream = repr(settings.queue.stream)
    if settings.queue.partitions > 1:
        stream = "their partitions' streams"
    if args.dry_run:
        rows = [(d["dead_id"], d.get("task"), d.get("error", "")[:60]) for d in chosen]
        output.table(f"Would replay {len(chosen)} onto {stream}",
                     ("dead ID", "task", "error"), rows, console)  # fmt: skip
        return 0
    moved = dead_partitions.replay(client, settings.queue, chosen)
    if args.json:
        output.as_json(moved)
    else:
        pairs = [(m["dead_id"], m["entry_id"]) for m in moved]
        output.table(f"Replayed {len(moved)} onto {stream}",
                     ("dead ID", "new entry ID"), pairs, console)  # fmt: skip
    return 0


def _purge(client: Client, settings: Settings, chosen: list[dict[str, Any]],
           args: argparse.Namespace, console: Console) -> int:  # fmt: skip
    if not chosen:
        console.print("no dead letter matches")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                "purge asks for confirmation: run it in a terminal, or pass --yes"
            )
        answer = input(f"Delete {len(chosen)} dead letters for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            console.print("nothing deleted")
            return 1
    removed = dead_partitions.purge(client, settings.queue, chosen)
    if args.json:
        output.as_json({"purged": removed})
    else:
        console.print(f"purged {removed}")
    return 0
