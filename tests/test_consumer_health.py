"""The consumer's /healthz (liveness: the loop makes progress) and /metrics endpoint."""

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from consumer import health
from harness.processes import free_port


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[float]]]:
    registry = CollectorRegistry()
    Counter("consumer_example", "An example.", registry=registry).inc()
    progress = [time.monotonic()]
    port = free_port()
    server = health.serve(port, registry, lambda: progress[0], stuck_after_s=60)
    yield f"http://127.0.0.1:{port}", progress
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_healthz_is_ok_while_the_loop_makes_progress(
    endpoint: tuple[str, list[float]],
) -> None:
    url, _ = endpoint
    status, body = get(f"{url}/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_healthz_fails_when_the_loop_is_stuck(
    endpoint: tuple[str, list[float]],
) -> None:
    url, progress = endpoint
    progress[0] = time.monotonic() - 61  # no poll, no entry started, for over a minute
    status, body = get(f"{url}/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "stuck"


def test_metrics_are_served_beside_it(endpoint: tuple[str, list[float]]) -> None:
    url, _ = endpoint
    status, body = get(f"{url}/metrics")
    assert status == 200
    assert b"consumer_example_total 1.0" in body
    assert get(f"{url}/other")[0] == 404
