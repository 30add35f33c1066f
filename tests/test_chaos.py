"""Fault injection, quick tier: every scenario against real processes and a real Redis
must lose nothing, and the checker must catch the deliberately broken pipelines.
`make chaos` runs the same scenarios longer."""

from collections import Counter
from pathlib import Path

import pytest

from chaos.checker import Report, check
from chaos.load import Answer, Ledger
from chaos.runner import Scenario, run_scenario
from chaos.scenarios import CONTROLS, SCENARIOS
from tests.conftest import require_redis_server


def ledger(acked: dict[str, str], unknown: frozenset[str] = frozenset()) -> Ledger:
    book = Ledger(acknowledged=dict(acked), unknown=set(unknown))
    book.answers.append(Answer(0.0, 0.1, "202", False))
    return book


def test_checker_counts_lost_unexpected_and_duplicates() -> None:
    book = ledger(
        {"w1.0": "1-0", "w1.1": "1-1", "p2.0": "2-0"}, unknown=frozenset({"w3.0"})
    )
    runs = Counter({"w1.0": 2, "w3.0": 1, "w9.0": 1, "p2.0": 3})
    report = check(Report("unit", drained=True), book, runs, {"p2.0": [3]})
    assert (report.lost, report.unexpected, report.duplicates) == (1, 1, 1)
    assert (report.dead_lettered, report.max_deliveries) == (1, 3)
    assert not report.passed
    assert any("w1.1" in problem for problem in report.problems)  # acked, never ran
    assert any("w9.0" in problem for problem in report.problems)  # never accepted


def test_checker_passes_a_clean_run() -> None:
    report = check(
        Report("unit", drained=True), ledger({"w1.0": "1-0"}), Counter({"w1.0": 1}), {}
    )
    assert report.passed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_chaos_scenario_loses_nothing(scenario: Scenario, tmp_path: Path) -> None:
    require_redis_server()
    report = run_scenario(scenario, tmp_path, quick=True)
    print(report)
    assert report.acknowledged > 0
    assert (report.lost, report.unexpected, report.drained) == (0, 0, True)
    assert report.passed, report.problems


@pytest.mark.timeout(120)
@pytest.mark.parametrize("control", CONTROLS, ids=lambda s: s.name)
def test_chaos_checker_catches_a_broken_pipeline(
    control: Scenario, tmp_path: Path
) -> None:
    require_redis_server()
    report = run_scenario(control, tmp_path, quick=True)
    print(report)
    assert report.lost > 0
    assert not report.passed
