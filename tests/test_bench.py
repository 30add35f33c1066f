"""`make bench` runs: a smoke run of its quick mode (it checks the benchmark works, not
the figures, which belong to `make bench` on a quiet machine)."""

import subprocess
import sys
from pathlib import Path

import pytest

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
                "Dispatch: one POST", "Image"):  # fmt: skip
        line = next(x for x in table.splitlines() if row in x)
        assert line.startswith("| ") and line.count(" | ") == 5, line
    # Every figure of the table is there, with the raw one beside it.
    assert "raw, 2 processes: " in table and "2 plain processes: " in table
