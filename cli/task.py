"""`pipeline task ID` shows what happened to a task; `pipeline task cancel ID` cancels
one that has not started (pipeline_core/task_state.py). With PARTITIONS > 1 the ID is
p<partition>-<entry ID>, as /dispatch answered it."""

import argparse
import json
from typing import Any

from rich.console import Console

from cli import output
from cli.settings import CliError, Settings, connect_cli
from pipeline_core import all_partitions
from pipeline_core.task_state import InvalidTaskIdError


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    command = sub.add_parser(
        "task", help="a task's state by its ID; `task cancel ID` cancels it"
    )
    command.add_argument(
        "words", nargs="+", metavar="[cancel] ID", help="the task ID (from dispatch)"
    )
    command.add_argument("--json", action="store_true", help="JSON for scripts")
    command.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    words: list[str] = args.words
    cancelling = words[0] == "cancel"
    if len(words) != 1 + cancelling:
        raise CliError("usage: pipeline task ID, or pipeline task cancel ID")
    task_id = words[-1]
    client = connect_cli(settings)
    try:
        found = all_partitions.task(client, settings.queue, task_id, cancelling)
    except InvalidTaskIdError as error:
        raise CliError(str(error)) from None
    if found is None:
        raise CliError(f"no task {task_id} (unknown, or its record expired)")
    body = all_partitions.task_body(settings.queue, task_id, found)
    if args.json:
        output.as_json(body)
    else:
        _show(body, console)
    if cancelling and not found.cancelled_now:
        raise CliError(f"task {task_id} is {found.state}: only a queued, delayed or "
                       "retrying task can be cancelled")  # fmt: skip
    return 0


def _show(body: dict[str, Any], console: Console) -> None:
    rows = [(name, _text(value)) for name, value in body.items()]
    output.table(f"Task {body['id']}", ("", ""), rows, console)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
