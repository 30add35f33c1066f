"""The hot-path histograms export exactly what prometheus_client's Histogram would."""

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
