"""What each `pipeline` command does: read or change Redis, then print the outcome."""

import argparse
import sys
import time

import redis
from rich.console import Console

from cli import consumers, dead, output, state
from cli.settings import CliError, Settings, connect


def run_status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Once, or with --watch every few seconds until Ctrl-C (which ends it cleanly)."""
    client = connect(settings)
    try:
        while True:
            data = state.status(client, settings)
            if args.json:
                output.as_json(data)
            else:
                if args.watch:
                    console.clear()
                output.status(data, console)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def run_pending(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    rows = state.pending(
        connect(settings), settings, args.consumer, args.min_idle_ms, args.count
    )
    if args.json:
        output.as_json(rows)
        return 0
    table = [
        (r["entry_id"], r["consumer"], output.duration(r["idle_s"]), r["deliveries"],
         output.duration(r["age_s"]), "yes" if r["past_claim_idle"] else "")
        for r in rows
    ]  # fmt: skip
    idle_ms = settings.claim_idle_ms
    title = f"Pending entries, oldest first (claimable once idle {idle_ms} ms)"
    columns = ("entry ID", "consumer", "idle", "deliveries", "age", "claimable")
    output.table(title, columns, table, console)
    return 0


def run_dead(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    client = connect(settings)
    if args.action == "show":
        letter = dead.show(client, settings, args.id)
        output.as_json(letter) if args.json else console.print_json(data=letter)
        return 0
    ids = getattr(args, "ids", None) or None
    chosen = dead.letters(client, settings, args.task, args.error, ids)
    if args.action == "list":
        return _list_dead(chosen, args.json, console)
    if args.action != "list" and not (ids or args.task or args.error or args.all):
        raise CliError(
            f"say which dead letters to {args.action}: IDs, --task, --error or --all"
        )
    if args.action == "replay":
        return _replay(client, settings, chosen, args, console)
    return _purge(client, settings, chosen, args, console)


def _list_dead(chosen: list[dict[str, str]], as_json: bool, console: Console) -> int:
    if as_json:
        output.as_json(chosen)
        return 0
    rows = [(d["dead_id"], d.get("task"), d.get("deliveries"), d.get("source_id"),
             d.get("consumer"), d.get("error", "")[:80]) for d in chosen]  # fmt: skip
    columns = ("dead ID", "task", "deliveries", "source ID", "consumer", "error")
    output.table(f"Dead letters ({len(chosen)})", columns, rows, console)
    return 0


def _replay(client: redis.Redis, settings: Settings, chosen: list[dict[str, str]],
            args: argparse.Namespace, console: Console) -> int:  # fmt: skip
    if args.dry_run:
        rows = [(d["dead_id"], d.get("task"), d.get("error", "")[:60]) for d in chosen]
        output.table(f"Would replay {len(chosen)} onto {settings.stream!r}",
                     ("dead ID", "task", "error"), rows, console)  # fmt: skip
        return 0
    moved = dead.replay(client, settings, chosen)
    if args.json:
        output.as_json(moved)
    else:
        pairs = [(m["dead_id"], m["entry_id"]) for m in moved]
        output.table(f"Replayed {len(moved)} onto {settings.stream!r}",
                     ("dead ID", "new entry ID"), pairs, console)  # fmt: skip
    return 0


def _purge(client: redis.Redis, settings: Settings, chosen: list[dict[str, str]],
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
    removed = dead.purge(client, settings, chosen)
    output.as_json({"purged": removed}) if args.json else console.print(
        f"purged {removed}"
    )
    return 0


def run_prune(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    client = connect(settings)
    candidates = consumers.prunable(client, settings, args.idle_ms)
    names = [c["name"] for c in candidates]
    if args.dry_run and args.json:
        output.as_json(candidates)
        return 0
    if args.dry_run or not names:
        rows = [(c["name"], output.duration(c["idle_s"])) for c in candidates]
        output.table(f"Would prune {len(rows)} consumers (idle, nothing pending)",
                     ("consumer", "idle"), rows, console)  # fmt: skip
        return 0
    deleted = consumers.prune(client, settings, names, args.idle_ms)
    if args.json:
        output.as_json({"pruned": deleted})
    else:
        console.print(f"pruned {len(deleted)}: {', '.join(deleted) or '-'}")
    return 0
