"""A real Prometheus scrapes a real local run (dispatcher, two consumers) while messages
flow: every dashboard query must return data, and the throughput panel must agree with
what was actually processed."""

import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from harness.processes import Service, free_port, http_ok
from harness.prometheus import start_prometheus
from tests.conftest import eventually, require_tool
from tests.factories import drained
from tests.test_observability_files import panel_targets

pytestmark = pytest.mark.timeout(120)

MESSAGES, REQUESTS = 400, 40  # 10 messages a request, 5 requests a second
FAILING = 2  # entries of a task that always raises: failed, then dead-lettered
RATE_INTERVAL = "5s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval
TOLERANCE = 0.10  # how far an integrated rate() may stray from the true count


@dataclass
class Observed:
    prometheus: str
    dispatcher: str
    consumer_metrics: list[str]
    load_started_s: float
    load_ended_s: float  # the steady load of healthy work
    failed_at_s: float  # the failing entries dispatched


# Panels that show the load while it runs: their rates and quantiles must be there,
# finite and above zero in the middle of it, not merely "some data" after it.
LOAD_PANELS = ("Throughput", "End-to-end latency", "Processing time",
               "Dispatch outcomes", "HTTP requests", "HTTP latency p95")  # fmt: skip
FAILURE_PANELS = ("Failures by task", "Dead letters per second")


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    arguments = {"query": expr} | ({"time": f"{at:.3f}"} if at else {})
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode(arguments)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def post(url: str, body: object) -> int:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


@pytest.fixture(scope="module")
def observed(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("observed")
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        client.flushdb()
        port, metrics = free_port(), [free_port(), free_port()]
        env = {"REDIS_URL": redis_url, "PORT": str(port), "HOST": "127.0.0.1"}
        env["DISPATCH_ALLOW_ANONYMOUS"] = "1"
        services = [Service("dispatcher", env, tmp / "dispatcher.log")]
        for number, metrics_port in enumerate(metrics):
            consumer_env = {"REDIS_URL": redis_url, "METRICS_PORT": str(metrics_port)}
            consumer_env |= {
                "CONSUMER_NAME": f"pod-{number}",
                "TASK_MODULES": "tests.e2e_tasks",
            }
            consumer_env |= {
                "MAX_DELIVERIES": "2",
                "CLAIM_IDLE_MS": "300",
                "CLAIM_INTERVAL_MS": "50",
            }
            services.append(
                Service("consumer", consumer_env, tmp / f"consumer-{number}.log")
            )
        base = f"http://127.0.0.1:{port}"
        targets = {
            "dispatcher": [f"127.0.0.1:{port}"],
            "consumer": [f"127.0.0.1:{p}" for p in metrics],
        }
        require_tool("prometheus", "prometheus")
        prometheus, prometheus_url = start_prometheus(tmp, targets, interval="1s")
        try:
            eventually(lambda: http_ok(f"{base}/healthz"), timeout_s=30)
            eventually(
                lambda: len([r for r in query(prometheus_url, "up == 1")]) == 3,
                timeout_s=30,
            )
            started = time.time()
            for _ in range(REQUESTS):
                assert (
                    post(f"{base}/dispatch", {"num_messages": MESSAGES // REQUESTS})
                    == 202
                )
                time.sleep(0.2)  # the load's own pace: 50 messages a second
            ended = time.time()
            explode = {
                "task": "explode",
                "payloads": [{"n": n} for n in range(FAILING)],
            }
            assert post(f"{base}/dispatch", explode) == 202
            failed_at = time.time()
            eventually(lambda: drained(client, MESSAGES + FAILING), timeout_s=30)
            eventually(lambda: client.xlen("{tasks}:dead") == FAILING, timeout_s=30)
            # Prometheus has scraped the final state (polled, not slept on).
            final = (
                f'sum(consumer_messages_total{{outcome="dead_lettered"}}) == {FAILING}'
            )
            eventually(lambda: query(prometheus_url, final), timeout_s=30)
            # ... and the rates have settled to 0: an integral of rate() over the
            # load then holds every increment (its tail included).
            settled = f"sum(rate(consumer_messages_total[{RATE_INTERVAL}])) == 0"
            eventually(lambda: query(prometheus_url, settled), timeout_s=30)
            yield Observed(
                prometheus_url,
                base,
                [f"http://127.0.0.1:{p}" for p in metrics],
                started,
                ended,
                failed_at,
            )
        finally:
            prometheus.terminate()
            prometheus.wait()
            for service in services:
                service.stop()


@pytest.mark.parametrize(("title", "expr"), panel_targets(), ids=lambda v: str(v)[:40])
def test_every_dashboard_query_returns_data(
    observed: Observed, title: str, expr: str
) -> None:
    concrete = expr.replace("$__rate_interval", RATE_INTERVAL)
    assert query(observed.prometheus, concrete), f"{title}: no data for {concrete}"
    when = None
    if title.startswith(LOAD_PANELS):
        when = (observed.load_started_s + observed.load_ended_s) / 2
    elif title.startswith(FAILURE_PANELS):
        when = observed.failed_at_s + 4  # within the rate window after the failures
    if when is None:
        return
    values = [float(s["value"][1]) for s in query(observed.prometheus, concrete, when)]
    assert any(math.isfinite(v) and v > 0 for v in values), (title, concrete, values)
    if "endpoint" not in concrete:  # a per-endpoint p95 is NaN for idle endpoints
        assert all(math.isfinite(v) for v in values), (title, concrete, values)


def test_throughput_panel_agrees_with_what_was_processed(observed: Observed) -> None:
    [(_, dispatched), (_, processed)] = [
        (t, e) for t, e in panel_targets() if t.startswith("Throughput")
    ]
    window = int(time.time() - observed.load_started_s) + 10
    for expr, truth in ((processed, MESSAGES), (dispatched, MESSAGES + FAILING)):
        concrete = expr.replace("$__rate_interval", RATE_INTERVAL)
        [sample] = query(
            observed.prometheus, f"sum_over_time(({concrete})[{window}s:1s])"
        )
        total = float(sample["value"][1])
        assert abs(total - truth) <= TOLERANCE * truth, (expr, total, truth)


def test_stream_state_gauges_match_redis(observed: Observed) -> None:
    def value(expr: str) -> float:
        [sample] = query(observed.prometheus, expr)
        return float(sample["value"][1])

    assert value("pipeline_dead_letter_length") == FAILING
    assert value("pipeline_group_lag + pipeline_group_pending") == 0
    assert value("pipeline_group_consumers_active") == 2
    assert value('sum(consumer_messages_total{outcome="dead_lettered"})') == FAILING


@pytest.mark.parametrize("which", ["dispatcher", "consumer"])
def test_metrics_pass_promtool_check_metrics(observed: Observed, which: str) -> None:
    promtool = require_tool("promtool", "prometheus")
    url = observed.dispatcher if which == "dispatcher" else observed.consumer_metrics[0]
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read()
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True
    )
    assert done.returncode == 0 and not done.stdout and not done.stderr, (
        done.stdout + done.stderr
    )


def test_consumers_answer_their_liveness_probe(observed: Observed) -> None:
    for url in observed.consumer_metrics:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert json.loads(response.read())["status"] == "ok"
