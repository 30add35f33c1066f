"""`pipeline dispatch TASK --payloads FILE.jsonl`: bulk dispatch with a progress bar,
a summary of refusals by line, and a resume point after the last accepted line."""

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cli import output
from cli.bulk import Poster, Summary, batches, progress_file, send
from cli.settings import CliError, Settings


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    dispatch = sub.add_parser(
        "dispatch", help="send a JSONL file of payloads, in batches"
    )
    dispatch.add_argument("task", help="the task every line is a payload of")
    dispatch.add_argument(
        "--payloads", required=True, metavar="FILE", help="JSONL file, or -"
    )
    dispatch.add_argument(
        "--batch", type=int, default=100, help="payloads a request (100)"
    )
    dispatch.add_argument("--restart", action="store_true", help="ignore FILE.progress")
    dispatch.add_argument("--json", action="store_true", help="JSON for scripts")
    dispatch.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Send every line of the file as a payload of TASK, resuming after the last
    accepted line of an earlier run (kept in FILE.progress), unless --restart."""
    resume = None if args.payloads == "-" else progress_file(Path(args.payloads))
    start_after = _resume_point(resume, args.restart, console)
    lines: Iterable[str] = sys.stdin if resume is None else _read(Path(args.payloads))
    total = None if resume is None else len(list(lines))
    summary = Summary(skipped=start_after)
    poster = Poster(settings)
    columns = (TextColumn("dispatching"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("lines", total=total, completed=start_after)
            for batch in batches(lines, args.batch, start_after, summary):
                accepted = send(poster, args.task, batch, summary)
                progress.update(bar, completed=batch.lines[-1])
                if accepted and resume:
                    resume.write_text(f"{batch.lines[-1]}\n")
                if summary.failed:
                    break  # the dispatcher takes no work: stop here, resume later
    finally:
        poster.close()
    _report(summary, args.json, console)
    return 1 if summary.refused or summary.failed else 0


def _resume_point(resume: Path | None, restart: bool, console: Console) -> int:
    if resume is None or restart or not resume.exists():
        return 0
    line = int(resume.read_text().strip() or 0)
    console.print(f"resuming after line {line} ({resume}; --restart starts over)")
    return line


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise CliError(
            f"--payloads: cannot read {str(path)!r}: {error.strerror}"
        ) from None


def _report(summary: Summary, as_json: bool, console: Console) -> None:
    counts = {"sent": summary.sent, "accepted": summary.accepted,
              "refused": summary.refused, "failed": summary.failed,
              "skipped (resumed)": summary.skipped}  # fmt: skip
    if as_json:
        output.as_json({**counts, "reasons": dict(summary.reasons)})
        return
    output.table("Dispatch summary", ("", "lines"), list(counts.items()), console)
    if summary.reasons:
        rows = list(summary.reasons.items())
        output.table("Not accepted, by reason", ("reason", "lines"), rows, console)
