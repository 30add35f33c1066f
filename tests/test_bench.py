"""`make bench` runs: a smoke run of its quick mode (it checks the benchmark works, not
the figures, which belong to `make bench` on a quiet machine)."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.table import Results, Row, Target, render
from harness.processes import ROOT
from tests.conftest import require_redis_server


@pytest.mark.timeout(300)
def test_bench_quick_mode_writes_the_whole_table(tmp_path: Path) -> None:
    require_redis_server()
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = results.read_text()
    assert table in done.stdout
    for row in ("2 `python -m consumer`, no-op tasks", "1 `python -m consumer`",
                "Fairness: 6 sleeps", "Fairness: 6 `primes(3000)`", "speed-up",
                "`send_many` from Python", "Dispatch -> start p99",
                "Drain of a backlog", "Consumer peak RSS", "per queued entry",
                "Dispatch: one POST", "Delayed tasks promoted onto the stream",
                "Delayed tasks promoted and run", "Delayed task due -> start p99",
                "Image", "PARTITIONS=6: drain of",
                "PARTITIONS=3: Redis CPU"):  # fmt: skip
        line = next(x for x in table.splitlines() if row in x)
        assert line.startswith("| ") and line.count(" | ") == 5, line
    for row in ("Console: Overview", "Console: Dead letters, rare text"):
        assert row in done.stdout  # the console's page times follow the table
    for row in (
        "Front door: one long string, one emoji",
        "Front door: /healthz while 200",
    ):
        assert row in done.stdout  # then the front door's memory and slow clients
    # Every figure of the table is there, with the raw one beside it.
    assert "raw, 2 processes: " in table and "2 plain processes: " in table


def test_bench_table_judges_per_run_ratios_against_each_target() -> None:
    results = Results({"ours": [40.0, 60.0, 50.0], "raw": [100.0, 100.0, 90.0]})
    results.update({"p99": 4.0, "floor": 1.5})  # a second figure lists grow per run
    rows = [
        Row("drain", "ours", "raw", "raw", targets=(Target("ratio", 0.5),)),
        Row("p99", "p99", "floor", "floor", " ms", digits=1,
            targets=(Target("value", 5, True), Target("difference", 2, True))),
        Row("send", None, "raw", "raw", note="not built yet"),
    ]  # fmt: skip
    drain, p99, send = render(rows, results)[2:]
    # Ratios 0.4, 0.6, 0.56: their median 0.56 meets >= 0.5.
    assert drain == (
        "| drain | 50/s (40 to 60) | raw: 100/s (90 to 100) | 0.56x (0.40 to 0.60) "
        "| ours/beside >= 0.5x | ok |"
    )
    assert p99.endswith("| ours <= 5 ms; ours - beside <= 2 ms | **missed** |")
    assert "2.5 ms" in p99  # 4.0 - 1.5: over the 2 ms allowed
    assert send.startswith("| send | not built yet | raw: 100/s (90 to 100) |")
