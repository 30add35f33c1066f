"""The front door against real gunicorn and a private redis-server: slow and idle
clients do not starve it, and what it refuses before reading a body it does not wait
for."""

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.redis_server import EPHEMERAL
from harness.slow_clients import Crowd, SlowClients
from harness.stack import Stack
from tests.conftest import require_redis_server

pytestmark = pytest.mark.timeout(90)

TOKEN = "tok-" + "5" * 28
HEADER_TIMEOUT_S = 5.0  # the shipped default (gunicorn's keepalive)
BODY_TIMEOUT_S = 2.0  # shorter than shipped, so the test sees several rounds
MARGIN_S = 2.5  # a loaded 2-core machine: the deadlines are checked with room
ENV = {
    "DISPATCH_TOKENS": TOKEN,
    "OPERATOR_TOKENS": "op-" + "6" * 29,  # the console on (loopback), its sampler too
    "DISPATCH_ALLOW_ANONYMOUS": "0",
    "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "MAX_BODY_BYTES": "65536",
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_redis_server()
    workdir: Path = tmp_path_factory.mktemp("frontdoor")
    started = Stack(
        workdir, consumers=0, dispatcher_env=ENV, redis_options=EPHEMERAL
    ).start()
    yield started
    started.stop()


def timed(port: int, method: str, path: str, body: object = None) -> tuple[int, float]:
    """(status, seconds) of one request on a fresh connection, as a probe makes it."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request(method, path, json.dumps(body) if body else None, headers)
    status = conn.getresponse().status
    conn.close()
    return status, time.monotonic() - started


def workers(stack: Stack) -> set[int]:
    assert stack.dispatcher is not None
    return {child.pid for child in psutil.Process(stack.dispatcher.pid).children()}


def test_frontdoor_answers_within_a_second_under_slow_and_idle_clients(
    stack: Stack,
) -> None:
    before = workers(stack)
    crowd = Crowd(slowloris=200, silent=200, slow_body=50, token=TOKEN)
    slowest = {"health": 0.0, "dispatch": 0.0}
    with SlowClients(stack.port, crowd) as clients:
        # Past the header deadline: the first round of slow connections was closed
        # and opened again while the probes ran.
        end = time.monotonic() + HEADER_TIMEOUT_S + MARGIN_S
        while time.monotonic() < end:
            status, health_s = timed(stack.port, "GET", "/healthz")
            assert status == 200
            status, dispatch_s = timed(
                stack.port, "POST", "/dispatch", {"num_messages": 1}
            )
            assert status == 202
            slowest["health"] = max(slowest["health"], health_s)
            slowest["dispatch"] = max(slowest["dispatch"], dispatch_s)
            time.sleep(0.1)
    assert slowest["health"] < 1.0 and slowest["dispatch"] < 1.0, slowest
    # The deadlines closed the slow connections, each within its bound.
    for kind, bound_s in (
        ("slowloris", HEADER_TIMEOUT_S),
        ("silent", HEADER_TIMEOUT_S),
        ("slow_body", BODY_TIMEOUT_S),
    ):
        lifetimes = clients.lifetimes(kind)
        assert lifetimes, f"no {kind} connection was closed"
        assert max(lifetimes) < bound_s + MARGIN_S, (kind, max(lifetimes))
    assert len(clients.lifetimes("slowloris")) >= crowd.slowloris
    assert len(clients.lifetimes("silent")) >= crowd.silent
    # The worker was never killed or replaced.
    assert workers(stack) == before
    assert "WORKER TIMEOUT" not in stack.log_text("dispatcher")


def send_head_and_wait(port: int, head: str) -> tuple[str, bool]:
    """Send a head and one byte of a body that is never finished; return the answer's
    head and whether the server then closed the connection within a second."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head.encode() + b"{")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    sock.settimeout(1.0)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
        closed = True
    except TimeoutError:
        closed = False
    sock.close()
    return answer.split(b"\r\n\r\n")[0].decode(), closed


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Type: application/json\r\nContent-Length: 1000", 401),
        (f"Authorization: Bearer {TOKEN}\r\nContent-Type: text/plain\r\n"
         "Content-Length: 1000", 415),
        (f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
         "Content-Length: 100000", 413),
    ],
)  # fmt: skip
def test_frontdoor_refusal_before_the_body_closes_the_connection(
    stack: Stack, headers: str, status: int
) -> None:
    head = f"POST /dispatch HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n"
    answer, closed = send_head_and_wait(stack.port, head)
    assert answer.startswith(f"HTTP/1.1 {status} ")
    assert "Connection: close" in answer.split("\r\n")
    assert closed  # it did not wait for the rest of the body


def test_frontdoor_refuses_a_chunked_body_over_the_limit(stack: Stack) -> None:
    # Valid JSON padded past MAX_BODY_BYTES: cut at the limit, it would still parse.
    body = b'{"num_messages": 1}' + b" " * 70_000
    head = (
        f"POST /dispatch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    # The whole request in one send, before the server can answer: it answers 413 at
    # the limit and closes without reading the rest, so a client still sending (as
    # http.client sends the last chunk) may be reset mid-request.
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(head.encode() + chunked)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read())["field"] == "body"
        response.close()


def post_padded(port: int, size: int) -> tuple[int, dict[str, str], bytes]:
    """A valid dispatch padded with spaces to `size` bytes: (status, headers, body)."""
    body = b'{"num_messages": 1}'.ljust(size)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request("POST", "/dispatch", body, headers)
    response = conn.getresponse()
    answer = (response.status, dict(response.getheaders()), response.read())
    conn.close()
    return answer


def test_frontdoor_refuses_bodies_past_what_a_process_may_hold(stack: Stack) -> None:
    # The budget is 2 x MAX_BODY_BYTES = 131,072 bytes; bodies are charged by chunks of
    # 16 KiB as they arrive. Two unfinished bodies of 60,000 bytes hold 3 chunks each
    # (98,304 bytes), so a body of 40,000 bytes does not fit beside them.
    head = (
        f"POST /dispatch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 65000\r\n\r\n"
    )
    holders = [socket.create_connection(("127.0.0.1", stack.port)) for _ in range(2)]
    for sock in holders:
        sock.sendall(head.encode() + b" " * 60_000)
    deadline = time.monotonic() + 5
    while (answer := post_padded(stack.port, 40_000))[0] != 503:
        assert time.monotonic() < deadline, answer  # the holders not read yet
    _, headers, body = answer
    assert headers["Retry-After"] == "1" and headers["Connection"] == "close"
    assert json.loads(body)["error"] == "busy"
    for sock in holders:
        sock.close()
    deadline = time.monotonic() + 5
    while (answer := post_padded(stack.port, 40_000))[0] != 202:
        assert time.monotonic() < deadline, answer  # given back when they ended


def test_frontdoor_cuts_a_console_form_trickled_past_the_body_deadline(
    stack: Stack,
) -> None:
    head = (
        "POST /ui/signin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=0.5)
    sock.sendall(head.encode())
    started, answer = time.monotonic(), b""
    while time.monotonic() - started < BODY_TIMEOUT_S + MARGIN_S:
        try:
            sock.sendall(b"t")  # one byte of the form every half second
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        answer += chunk
    sock.close()
    took_s = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert BODY_TIMEOUT_S <= took_s < BODY_TIMEOUT_S + MARGIN_S
