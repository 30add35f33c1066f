"""`pipeline delayed`: tasks waiting to be due, the earliest first: delayed dispatches
(countdown, run_at) and retries waiting for their backoff (pipeline_core/delayed.py),
of every partition (their task IDs p<partition>-<ID> with PARTITIONS > 1)."""

import argparse
from typing import Any

from rich.console import Console

from cli import output
from cli.settings import Settings, connect_cli
from pipeline_core import all_partitions, delayed
from pipeline_core.connection import redis_now_ms


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    command = sub.add_parser(
        "delayed", help="tasks waiting to be due (delayed, retries), earliest first"
    )
    command.add_argument(
        "--count", type=int, default=100, help="at most this many (100)"
    )
    command.add_argument("--json", action="store_true", help="JSON for scripts")
    command.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    client = connect_cli(settings)
    now_ms = redis_now_ms(client, settings.queue)  # Redis's clock
    count = max(args.count, 1)
    rows = [
        _row(waiting, now_ms)
        for waiting in all_partitions.waiting(client, settings.queue, count)
    ]
    if args.json:
        output.as_json(rows)
        return 0
    table = [(r["id"], r["task"], _due(r["due_in_s"]), r["attempt"]) for r in rows]
    title = "Tasks waiting to be due, earliest first (attempt > 0: a retry)"
    output.table(title, ("task ID", "task", "due in", "attempt"), table, console)
    return 0


def _due(due_in_s: float) -> str:
    if due_in_s >= 0:
        return output.duration(due_in_s)
    return f"overdue by {output.duration(-due_in_s)}"


def _row(waiting: delayed.Waiting, now_ms: int) -> dict[str, Any]:
    return {
        "id": waiting.task_id,
        "task": waiting.fields.get("task"),
        "due_ms": waiting.due_ms,
        "due_in_s": (waiting.due_ms - now_ms) / 1000,
        "attempt": waiting.attempt,
        "expires_ms": int(waiting.fields["expires"]) if "expires" in waiting.fields
        else None,
    }  # fmt: skip
