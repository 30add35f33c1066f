"""The hot-path histograms export exactly what prometheus_client's Histogram would."""

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from consumer.histograms import TaskHistograms

BUCKETS = (0.001, 0.01, 0.1, 1, 10)
OBSERVED = [0.0005, 0.001, 0.002, 0.05, 0.1, 0.7, 3.0, 42.0]


def exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return sorted(line for line in lines if "_created" not in line)


def test_task_histograms_match_prometheus_client_histograms() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = TaskHistograms("consumer_demo_seconds", "A demo.", BUCKETS)
    ours.register(fast)
    reference = Histogram(
        "consumer_demo_seconds", "A demo.", ["task"], buckets=BUCKETS, registry=theirs
    )
    fast.prepare(["idle"])
    reference.labels("idle")
    for value in OBSERVED:
        fast.observe("demo", value)
        reference.labels("demo").observe(value)
    assert exposition(ours) == exposition(theirs)


def test_task_histograms_observe_many_matches_one_by_one() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    many = TaskHistograms("consumer_demo_seconds", "A demo.", BUCKETS)
    one_by_one = TaskHistograms("consumer_demo_seconds", "A demo.", BUCKETS)
    ours.register(many)
    theirs.register(one_by_one)
    values = [*OBSERVED, 0.0, 10.0, 0.01, 0.0005]  # bounds, and the same value twice
    many.observe_many("demo", list(reversed(values)))
    many.observe_many("demo", [])
    many.observe_many("other", values[:3])
    for value in values:
        one_by_one.observe("demo", value)
    for value in values[:3]:
        one_by_one.observe("other", value)
    # The sums agree but for the order of additions (float rounding).
    counted, sums = [], []
    for lines in (exposition(ours), exposition(theirs)):
        counted.append([line for line in lines if "_sum{" not in line])
        sums.append([float(line.split()[-1]) for line in lines if "_sum{" in line])
    assert counted[0] == counted[1]
    assert sums[0] == pytest.approx(sums[1])
