"""`pipeline pending`: pending entries, oldest first, with owner, idle time and
deliveries, and whether each is claimable yet."""

import argparse
from typing import Any

from rich.console import Console

from cli import output, partitioned
from cli.settings import Settings, connect_cli
from cli.status import require_group
from pipeline_core import all_partitions
from pipeline_core.connection import Client
from pipeline_core.group_state import age_s, read_group_state


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    pending = sub.add_parser("pending", help="pending entries, oldest first")
    pending.add_argument("--consumer", help="only this consumer's")
    pending.add_argument(
        "--min-idle-ms", type=int, default=0, help="only entries idle this long"
    )
    pending.add_argument(
        "--count", type=int, default=100, help="at most this many (100)"
    )
    pending.add_argument("--json", action="store_true", help="JSON for scripts")
    pending.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    client = connect_cli(settings)
    rows = pending(client, settings, args.consumer, args.min_idle_ms, args.count)
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


def pending(
    client: Client,
    settings: Settings,
    consumer: str | None,
    min_idle_ms: int,
    count: int,
) -> list[dict[str, Any]]:
    """Pending entries, oldest first (one XPENDING range per partition, never a full
    scan); with PARTITIONS > 1 every partition's, their IDs p<partition>-<entry ID>."""
    states = []
    for part in partitioned.settings_of(settings):
        states.append(read_group_state(client, part.queue))
        require_group(states[-1], part)
    rows = all_partitions.pending(
        client, settings.queue, count, consumer, (min_idle_ms, None)
    )
    now_s = max(state.now_s for state in states)
    return [_row(row, settings.claim_idle_ms, now_s) for row in rows]


def _row(row: dict[str, Any], claim_idle_ms: int, now_s: float) -> dict[str, Any]:
    idle_ms = int(row["time_since_delivered"])
    return {
        "entry_id": str(row["message_id"]),  # p<partition>-<entry ID> with PARTITIONS
        "consumer": str(row["consumer"]),
        "idle_s": idle_ms / 1000,
        "deliveries": int(row["times_delivered"]),
        "age_s": age_s(str(row["entry_id"]), now_s),
        "past_claim_idle": idle_ms >= claim_idle_ms,
    }
