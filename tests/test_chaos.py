"""Fault injection, quick tier: every scenario against real processes and a real Redis
must lose nothing, and the checker must catch the deliberately broken pipelines.
`make chaos` runs the same scenarios longer."""

from collections import Counter
from pathlib import Path

import pytest
import redis

from chaos.checker import Report, check, drained
from chaos.load import Answer, Ledger
from chaos.runner import Scenario, run_scenario
from chaos.scenarios import CONTROLS, SCENARIOS
from tests.conftest import require_redis_server

MAX = 3  # MAX_DELIVERIES of the hand-made histories


def ledger(acked: dict[str, str], unknown: frozenset[str] = frozenset()) -> Ledger:
    book = Ledger(acknowledged=dict(acked), unknown=set(unknown))
    book.answers.append(Answer(0.0, 0.1, "202", False))
    return book


def checked(
    acked: dict[str, str],
    runs: dict[str, int],
    dead: dict[str, list[int]],
    unknown: frozenset[str] = frozenset(),
) -> Report:
    report = Report("unit", drained=True)
    return check(report, ledger(acked, unknown), Counter(runs), dead, MAX)


def test_checker_passes_a_clean_run_with_contained_poison() -> None:
    report = checked(
        {"w1.0": "1-0", "p2.0": "2-0", "c3.0": "3-0"},
        {"w1.0": 1, "p2.0": 3, "c3.0": 3},
        {"p2.0": [3], "c3.0": [3]},
    )
    assert report.passed, report.problems
    assert (report.processed, report.dead_lettered, report.lost) == (1, 2, 0)


def test_checker_finds_a_healthy_entry_that_never_ran() -> None:
    report = checked({"w1.0": "1-0", "w1.1": "1-1"}, {"w1.0": 1}, {})
    assert report.lost == 1 and "w1.1" in report.problems[0]


def test_checker_finds_a_healthy_entry_dead_lettered_in_any_scenario() -> None:
    report = checked({"w1.0": "1-0"}, {"w1.0": 1}, {"w1.0": [3]})
    assert report.wrongly_dead == 1 and report.processed == 0
    assert any("healthy entries dead-lettered" in p for p in report.problems)


def test_checker_finds_poison_dropped_after_one_try() -> None:
    report = checked({"p2.0": "2-0"}, {"p2.0": 1}, {"p2.0": [1]})
    assert report.lost == 1 and not report.passed


def test_checker_finds_poison_never_contained() -> None:
    report = checked({"p2.0": "2-0"}, {"p2.0": 3}, {})
    assert (report.lost, report.processed) == (
        1,
        0,
    )  # its runs never count as processed


def test_checker_finds_a_crash_entry_dead_lettered_without_a_run() -> None:
    report = checked({"c3.0": "3-0"}, {}, {"c3.0": [3]})
    assert report.lost == 1


def test_checker_finds_poison_dead_lettered_twice_or_run_too_often() -> None:
    report = checked({"p2.0": "2-0"}, {"p2.0": 4}, {"p2.0": [3, 3]})
    assert any("dead-lettered 2 times" in p for p in report.problems)
    assert any("ran 4 times, over 3" in p for p in report.problems)


def test_checker_counts_unexpected_and_duplicates() -> None:
    report = checked(
        {"w1.0": "1-0"},
        {"w1.0": 2, "w3.0": 1, "w9.0": 1},
        {},
        unknown=frozenset({"w3.0"}),
    )
    assert (report.unexpected, report.duplicates, report.lost) == (1, 1, 0)
    assert any("w9.0" in problem for problem in report.problems)  # never accepted


def test_checker_expects_a_retried_task_to_fail_then_run_once_more() -> None:
    acked = {"r1.0": "1-0", "r1.1": "1-1", "r1.2": "1-2"}
    # Two failures and the success; two runs only (no success); one run more.
    report = checked(acked, {"r1.0": 3, "r1.1": 2, "r1.2": 4}, {})
    assert (report.processed, report.lost, report.duplicates) == (2, 1, 1)
    assert "r1.1" in report.problems[0]


def test_checker_drained_waits_for_the_delayed_set(r: redis.Redis) -> None:
    r.xgroup_create("tasks", "workers", "0", mkstream=True)
    assert drained(r, "tasks", "workers")
    # A retry waiting for its backoff: nothing on the stream, the work not done.
    r.zadd("{tasks}:delayed", {"1-1000000000000000001": 1})
    assert not drained(r, "tasks", "workers")


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
    assert report.violations == []  # its loss stays within what its faults explain
