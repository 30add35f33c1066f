"""Idempotent dispatch and tasks by ID over real gunicorn (`python -m dispatcher`) and a
real Redis: a retried POST with an Idempotency-Key writes once; GET/DELETE /tasks/<id>
answer the token that dispatched the task."""

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.stack import Stack
from tests.conftest import eventually
from tests.factories import GROUP, STREAM, make_worker

pytestmark = pytest.mark.timeout(120)

CLIENT_A, CLIENT_B, OPERATOR = (
    "client-a-" + "a" * 20,
    "client-b-" + "b" * 20,
    "op-" + "o" * 24,
)


def request(
    base: str,
    method: str,
    path: str,
    token: str,
    body: object | None = None,
    key: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(f"{base}{path}", data=data, method=method)
    call.add_header("Authorization", f"Bearer {token}")
    call.add_header("Content-Type", "application/json")
    if key is not None:
        call.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    env = {"DISPATCH_ALLOW_ANONYMOUS": "0",
           "DISPATCH_TOKENS": f"{CLIENT_A},{CLIENT_B}", "OPERATOR_TOKENS": OPERATOR,
           "MAX_BACKLOG": "6", "IDEMPOTENCY_TTL_S": "3"}  # fmt: skip
    started = Stack(tmp_path, consumers=0, dispatcher_env=env).start()
    yield started
    started.stop()


def client_of(stack: Stack) -> redis.Redis:
    assert stack.redis is not None
    return stack.redis.client()


ORDER = {"task": "demo", "payloads": [{"n": 1}, {"n": 2}]}


def test_a_repeat_gets_the_first_answer_and_writes_nothing(stack: Stack) -> None:
    base = stack.base_url
    status, first, headers = request(base, "POST", "/dispatch", CLIENT_A, ORDER, "k-1")
    assert status == 202 and "Idempotent-Replayed" not in headers
    assert first["task_ids"] == first["entry_ids"] and first["count"] == 2
    status, again, headers = request(base, "POST", "/dispatch", CLIENT_A, ORDER, "k-1")
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    with client_of(stack) as r:
        assert r.xlen(STREAM) == 2
        other = {"task": "demo", "payloads": [{"n": 3}]}
        status, body, _ = request(base, "POST", "/dispatch", CLIENT_A, other, "k-1")
        assert (status, body["field"]) == (422, "Idempotency-Key")
        # Another token's key of the same name is its own.
        status, theirs, _ = request(base, "POST", "/dispatch", CLIENT_B, ORDER, "k-1")
        assert status == 202 and theirs["entry_ids"] != first["entry_ids"]
        assert r.xlen(STREAM) == 4
        # Past IDEMPOTENCY_TTL_S (3 s) the key is forgotten: the same request writes.
        eventually(lambda: not r.keys("{tasks}:idem:*"), timeout_s=10, every_s=0.2)
        r.delete(STREAM)  # room under MAX_BACKLOG (6)
        status, later, _ = request(base, "POST", "/dispatch", CLIENT_A, ORDER, "k-1")
        assert status == 202 and later["entry_ids"] != first["entry_ids"]


def test_concurrent_requests_with_one_key_write_once(stack: Stack) -> None:
    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        answers.append(
            request(stack.base_url, "POST", "/dispatch", CLIENT_A, ORDER, "k")
        )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _, _ in answers} == {202}
    assert len({tuple(body["entry_ids"]) for _, body, _ in answers}) == 1
    replayed = [h for _, _, h in answers if h.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 7
    with client_of(stack) as r:
        assert r.xlen(STREAM) == 2


def test_refusals_record_nothing_so_a_retry_can_succeed(stack: Stack) -> None:
    base = stack.base_url
    with client_of(stack) as r:
        request(base, "POST", "/dispatch", CLIENT_A, {"num_messages": 6})  # full
        status, body, _ = request(base, "POST", "/dispatch", CLIENT_A, ORDER, "k-full")
        assert (status, body["error"]) == (429, "backlog full")
        assert not r.keys("{tasks}:idem:*")
        r.delete(STREAM)
        eventually(
            lambda: (
                request(base, "POST", "/dispatch", CLIENT_A, ORDER, "k-full")[0] == 202
            ),
            timeout_s=5,
        )  # the backlog the dispatcher caches is at most 100 ms old
        assert r.xlen(STREAM) == 2
        bad = request(base, "POST", "/dispatch", CLIENT_A, ORDER, "x" * 256)
        assert (bad[0], bad[1]["field"]) == (400, "Idempotency-Key")
        paced = {**ORDER, "delay": 0.01}
        status, body, _ = request(base, "POST", "/dispatch", CLIENT_A, paced, "k-p")
        assert (status, body["field"]) == (400, "Idempotency-Key")
        assert r.xlen(STREAM) == 2 and len(r.keys("{tasks}:idem:*")) == 1


def test_tasks_by_id_for_their_token_and_operators(stack: Stack) -> None:
    base = stack.base_url
    status, sent, _ = request(base, "POST", "/dispatch", CLIENT_A, ORDER)
    done_id, queued_id = sent["task_ids"]
    with client_of(stack) as r:
        r.xgroup_create(STREAM, GROUP, "0")
        worker = make_worker(r, {"demo": lambda **p: p}, batch_size=1)
        worker.poll_once()  # runs the first only
        status, done, _ = request(base, "GET", f"/tasks/{done_id}", CLIENT_A)
        assert (status, done["state"], done["result"]) == (200, "succeeded", {"n": 1})
        status, queued, _ = request(base, "GET", f"/tasks/{queued_id}", OPERATOR)
        assert (status, queued["state"], queued["task"]) == (200, "queued", "demo")
        assert request(base, "GET", f"/tasks/{queued_id}", CLIENT_B)[0] == 404
        assert request(base, "DELETE", f"/tasks/{queued_id}", CLIENT_B)[0] == 404
        status, body, _ = request(base, "GET", "/tasks/not-an-id", CLIENT_A)
        assert (status, body["field"]) == (400, "task_id")
        assert request(base, "GET", "/tasks/1-0", CLIENT_A)[0] == 404
        status, cancelled, _ = request(base, "DELETE", f"/tasks/{queued_id}", CLIENT_A)
        assert (status, cancelled["state"]) == (200, "cancelled")
        status, body, _ = request(base, "DELETE", f"/tasks/{done_id}", CLIENT_A)
        assert (status, body["state"]) == (409, "succeeded")
        worker.poll_once()  # the cancelled one is acknowledged unrun
        assert r.xpending(STREAM, GROUP)["pending"] == 0
        assert request(base, "GET", f"/results/{done_id}", CLIENT_A)[0] == 200
        status, after, _ = request(base, "GET", f"/tasks/{queued_id}", CLIENT_A)
        assert (status, after["state"]) == (200, "cancelled")


def test_a_503_records_nothing_and_the_retry_writes(stack: Stack) -> None:
    assert stack.redis is not None
    stack.redis.kill()
    status, body, _ = request(stack.base_url, "POST", "/dispatch", CLIENT_A, ORDER, "k")
    assert (status, body["error"]) == (503, "redis unavailable")
    stack.redis.start()

    def retried() -> tuple[int, dict[str, Any], dict[str, str]] | None:
        answer = request(stack.base_url, "POST", "/dispatch", CLIENT_A, ORDER, "k")
        return answer if answer[0] == 202 else None

    found = eventually(retried, timeout_s=20, every_s=0.2)
    assert found is not None
    _, body, headers = found
    assert "Idempotent-Replayed" not in headers and len(body["task_ids"]) == 2


def test_a_delayed_dispatch_with_a_key_is_written_once(stack: Stack) -> None:
    base = stack.base_url
    later = {**ORDER, "countdown": 3600}
    status, first, _ = request(base, "POST", "/dispatch", CLIENT_A, later, "d-1")
    assert status == 202
    status, again, headers = request(base, "POST", "/dispatch", CLIENT_A, later, "d-1")
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    with client_of(stack) as r:
        assert r.zcard("{tasks}:delayed") == 2 and not r.exists(STREAM)
    # The timing is part of the request: another countdown is another request.
    sooner = {**ORDER, "countdown": 60}
    status, body, _ = request(base, "POST", "/dispatch", CLIENT_A, sooner, "d-1")
    assert (status, body["field"]) == (422, "Idempotency-Key")
    status, state, _ = request(base, "GET", f"/tasks/{first['task_ids'][0]}", CLIENT_A)
    assert (status, state["state"]) == (200, "delayed")
