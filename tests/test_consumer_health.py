"""The consumer's /healthz (liveness: the loop makes progress) and /metrics endpoint."""

import json
import socket
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
    server = health.serve(
        ("127.0.0.1", port), registry, lambda: progress[0], stuck_after_s=60
    )
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


def test_listener_binds_the_configured_host_only(
    endpoint: tuple[str, list[float]],
) -> None:
    url, _ = endpoint
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.settimeout(2)
        # 127.0.0.2 is loopback too, but not the address bound.
        assert probe.connect_ex(("127.0.0.2", port)) != 0


def test_silent_and_slow_connections_neither_starve_healthz_nor_stay_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "READ_TIMEOUT_S", 1.0)
    port = free_port()
    server = health.serve(
        ("127.0.0.1", port), CollectorRegistry(), time.monotonic, stuck_after_s=60
    )
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    try:
        for connection in slow:  # a request line, never finished
            connection.sendall(b"GET /healthz HTTP/1.1\r\nX-a: ")
        started = time.monotonic()
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert time.monotonic() - started < 1.0
        for connection in idle[:20] + slow[:20]:  # dropped by the server, in time
            connection.settimeout(10)
            assert connection.recv(1) == b""
        assert time.monotonic() - started < 10
    finally:
        for connection in idle + slow:
            connection.close()
        server.shutdown()
        server.server_close()
