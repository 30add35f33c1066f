"""Printing: tables for people (rich), JSON for scripts. Text from Redis (payloads,
errors, names) is printed as text, never read as rich markup."""

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline_core.wire import printable


def as_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def pretty_json(data: Any, console: Console) -> None:
    console.print_json(json.dumps(data, default=str))  # ASCII: surrogates escaped


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], console: Console
) -> None:
    grid = Table(title=Text(title), title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(
            *(Text("-" if cell is None else printable(str(cell))) for cell in row)
        )
    console.print(grid)


def status(data: dict[str, Any], console: Console) -> None:
    lag = data["lag"]
    if data.get("lag_source") == "estimated":
        lag = f"at most {lag} (Redis cannot tell: entries were deleted)"
    facts = [
        ("stream", f"{data['stream']} ({data['length']} entries)"),
        ("group", data["group"]),
        ("lag (never delivered)", lag),
        ("pending (delivered, not acked)", data["pending"]),
        ("oldest pending", duration(data["oldest_pending_age_s"])),
        ("oldest undelivered", duration(data["oldest_undelivered_age_s"])),
        ("dead letters", data["dead_letters"]),
        ("delayed (waiting to be due)", data["delayed"]),
        ("oldest overdue", duration(data["delayed_oldest_overdue_s"] or None)),
        ("redis", f"{data['redis_version']} at {data['redis_url']}"),
    ]
    facts += [(name, value) for name, value in data["persistence"].items()]
    table("Pipeline", ("", ""), facts, console)
    rows = [(c["name"], c["pending"], duration(c["idle_s"])) for c in data["consumers"]]
    table("Consumers", ("consumer", "pending", "idle"), rows, console)
    if "partitions" in data:  # PARTITIONS > 1: the figures above are totals
        names = ("partition", "stream", "slot", "length", "lag", "pending",
                 "dead_letters", "delayed")  # fmt: skip
        parts = [[p[name] for name in names] for p in data["partitions"]]
        table("Partitions", names, parts, console)
    if data["schedules"]:
        rows = [(s["task"], s["last_tick"], s["next_tick"]) for s in data["schedules"]]
        table("Periodic tasks", ("task", "last tick", "next tick"), rows, console)
    for warning in data["warnings"]:
        console.print(Text("warning: ", style="bold yellow") + Text(printable(warning)))
