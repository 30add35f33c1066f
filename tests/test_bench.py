"""`make bench` runs: a smoke run of its quick mode (it checks the benchmark works, not
the figures, which belong to `make bench` on a quiet machine)."""

import subprocess
import sys

import pytest

from harness.processes import ROOT
from tests.conftest import require_redis_server


@pytest.mark.timeout(300)
def test_bench_quick_mode_prints_the_whole_table() -> None:
    require_redis_server()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("Raw limit: XADD", "Dispatch: one POST", "Drain: 2 python -m consumer",
                "Latency dispatch->start", "primes: speed-up", "Peak RSS: consumer",
                "Redis used_memory", "Image", "Console: Overview",
                "Console: Dead letters, rare text"):  # fmt: skip
        assert row in done.stdout
