"""`python -m chaos [--quick] [--only NAME ...]`: every scenario and control, one table.

Exits 1 when a scenario fails or a broken control is not caught."""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from chaos.checker import Report
from chaos.runner import Scenario, run_scenario
from chaos.scenarios import CLUSTER, CONTROLS, FAILOVERS, LONGER, SCENARIOS

COLUMNS = (
    ("scenario", 20), ("acked", 6), ("processed", 9), ("dead", 5), ("lost", 5),
    ("unexp", 5), ("dups", 5), ("max dlv", 7), ("recovery s", 10), ("peak XLEN", 9),
    ("peak MiB", 8), ("result", 6),
)  # fmt: skip


def verdict(scenario: Scenario, report: Report) -> bool:
    """A scenario must pass; a broken control must be caught losing work."""
    if scenario.expect_loss:
        return report.lost > 0 and not report.violations
    return report.passed


def row(scenario: Scenario, report: Report) -> str:
    recovery = "-" if report.recovery_s is None else f"{report.recovery_s:.2f}"
    result = "pass" if verdict(scenario, report) else "FAIL"
    if scenario.expect_loss and result == "pass":
        result = "caught"
    elif report.lost and result == "pass":  # a loss measured, not failed
        result = "measured"
    cells = (
        report.scenario, report.acknowledged, report.processed, report.dead_lettered,
        report.lost, report.unexpected, report.duplicates, report.max_deliveries,
        recovery, report.peak_xlen, f"{report.peak_memory_bytes / 2**20:.1f}", result,
    )  # fmt: skip
    return "  ".join(f"{c!s:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="short runs (as in make test)"
    )
    parser.add_argument("--only", nargs="*", default=[], help="scenario names to run")
    parser.add_argument("--results", type=Path, help="write the table (Markdown) here")
    args = parser.parse_args()
    every = SCENARIOS + LONGER + CONTROLS + FAILOVERS + CLUSTER
    chosen = [s for s in every if not args.only or s.name in args.only]
    print("  ".join(f"{name:>{width}}" for name, width in COLUMNS), flush=True)
    done: list[tuple[Scenario, Report]] = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
        for scenario in chosen:
            report = run_scenario(scenario, Path(workdir) / scenario.name, args.quick)
            done.append((scenario, report))
            print(row(scenario, report), flush=True)
            if not verdict(scenario, report):
                problems = report.problems + report.violations
                print(f"    problems: {problems}", flush=True)
            print(f"    notes: {report.notes}", flush=True)
    if args.results:
        args.results.write_text(markdown(done, args.quick))
    return 1 if any(not verdict(s, r) for s, r in done) else 0


def markdown(done: list[tuple[Scenario, Report]], quick: bool) -> str:
    """The table for docs/chaos-results.md, with each scenario's notes under it."""
    lines = [
        "# `make chaos`: the latest results",
        "",
        f"Written by `python -m chaos{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on {platform.node()} "
        f"({os.cpu_count()} cores). Each scenario: [guarantees](guarantees.md).",
        "",
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for scenario, report in done:
        cells = row(scenario, report).split()
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Notes per scenario:", ""]
    for scenario, report in done:
        lines.append(f"- **{scenario.name}**: {report.notes}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
