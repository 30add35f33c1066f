"""The HTTP layer: validation, answers and what reaches the stream (fakeredis: no stream
semantics matter here beyond XADD and XRANGE)."""

import json
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from dispatcher.app import create_app
from dispatcher.settings import Settings
from dispatcher.wsgi import connect_dispatcher
from harness.processes import free_port
from pipeline_core.connection import Client
from pipeline_core.redis_settings import RedisSettings
from tests.conftest import eventually
from tests.factories import entries

SEED_BODY = {"num_messages": 10, "delay": 0.1}


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server, decode_responses=True)


def unreachable() -> Client:
    """The dispatcher's own client, pointed at a port nobody listens on."""
    nowhere = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    return connect_dispatcher(Settings(redis=nowhere))


def make_client(client: Client, **overrides: Any) -> FlaskClient:
    settings = Settings(**{"allow_anonymous": True, **overrides})
    return create_app(settings, client).test_client()


@pytest.fixture
def http(fake: fakeredis.FakeRedis) -> Iterator[FlaskClient]:
    yield make_client(fake, max_messages=50, max_pacing_s=1.0, max_body_bytes=4096)


def post(http: FlaskClient, body: object) -> tuple[int, dict[str, Any]]:
    response = http.post("/dispatch", json=body)
    return response.status_code, response.get_json()


def test_dispatch_seed_body_is_accepted_and_paced(
    http: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    status, body = post(http, {"num_messages": 3, "delay": 0.01})
    assert status == 202
    assert (body["stream"], body["task"], body["count"]) == ("tasks", "demo", 3)
    written = entries(fake)
    assert [entry_id for entry_id, _ in written] == body["entry_ids"]
    assert [json.loads(f["payload"]) for _, f in written] == [
        {"seq": i} for i in range(3)
    ]
    assert {f["task"] for _, f in written} == {"demo"}


def test_dispatch_seed_body_unchanged_within_default_limits(
    fake: fakeredis.FakeRedis,
) -> None:
    status, body = post(make_client(fake), SEED_BODY)
    assert (status, body["count"]) == (202, 10)


def test_dispatch_task_with_payloads(
    http: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    payloads = [{"path": "a.png", "width": 10}, {"path": "b.png", "width": 20}]
    status, body = post(http, {"task": "resize", "payloads": payloads})
    assert (status, body["task"], body["count"]) == (202, "resize", 2)
    written = entries(fake)
    assert [json.loads(f["payload"]) for _, f in written] == payloads
    assert {f["task"] for _, f in written} == {"resize"}


def test_dispatch_num_messages_for_a_named_task(
    http: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    status, _ = post(http, {"num_messages": 2, "task": "primes"})
    assert status == 202
    assert {f["task"] for _, f in entries(fake)} == {"primes"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], "body"),
        ({}, "num_messages"),
        ({"num_messages": 1, "payloads": [{}]}, "num_messages"),
        ({"num_messages": 1, "colour": "red"}, "colour"),
        ({"num_messages": 0}, "num_messages"),
        ({"num_messages": 51}, "num_messages"),
        ({"num_messages": "3"}, "num_messages"),
        ({"num_messages": True}, "num_messages"),
        ({"num_messages": 2.5}, "num_messages"),
        ({"num_messages": 2, "delay": -1}, "delay"),
        ({"num_messages": 2, "delay": "0.1"}, "delay"),
        ({"num_messages": 2, "delay": True}, "delay"),
        ({"num_messages": 50, "delay": 0.1}, "delay"),
        ({"payloads": [{}]}, "task"),
        ({"task": "x", "payloads": []}, "payloads"),
        ({"task": "x", "payloads": {"a": 1}}, "payloads"),
        ({"task": "x", "payloads": [{}, 3]}, "payloads[1]"),
        ({"task": "", "num_messages": 1}, "task"),
        ({"task": "rm -rf /", "num_messages": 1}, "task"),
        ({"task": 7, "num_messages": 1}, "task"),
        ({"task": "a" * 129, "num_messages": 1}, "task"),
        # When tasks run: one of countdown / run_at, within MAX_COUNTDOWN_S, never
        # with the seed's pacing.
        ({"num_messages": 1, "countdown": -1}, "countdown"),
        ({"num_messages": 1, "countdown": "5"}, "countdown"),
        ({"num_messages": 1, "countdown": True}, "countdown"),
        ({"num_messages": 1, "countdown": 31 * 86_400}, "countdown"),
        ({"num_messages": 1, "countdown": 5, "run_at": 1}, "countdown"),
        ({"num_messages": 1, "run_at": "tomorrow"}, "run_at"),
        ({"num_messages": 1, "run_at": "2026-12-02T15:00:00"}, "run_at"),  # no zone
        ({"num_messages": 1, "run_at": 9e12}, "run_at"),
        ({"num_messages": 1, "run_at": [1]}, "run_at"),
        ({"num_messages": 1, "expires_s": 0}, "expires_s"),
        ({"num_messages": 1, "expires_s": "1"}, "expires_s"),
        ({"num_messages": 2, "delay": 0.1, "countdown": 5}, "countdown"),
        ({"num_messages": 2, "delay": 0.1, "expires_s": 5}, "expires_s"),
    ],
)
def test_dispatch_refuses_bad_input_naming_the_field_and_writes_nothing(
    http: FlaskClient, fake: fakeredis.FakeRedis, body: object, field: str
) -> None:
    status, answer = post(http, body)
    assert status == 400
    assert answer["error"] == "invalid request"
    assert answer["field"] == field
    assert answer["rule"]
    assert fake.exists("tasks") == 0


@pytest.mark.parametrize(
    ("data", "content_type", "status", "field"),
    [
        ('{"num_messages": 1}', "text/plain", 415, "Content-Type"),
        ("{not json", "application/json", 400, "body"),
        ('{"num_messages": 1, "delay": NaN}', "application/json", 400, "body"),
        ('{"task": "x", "payloads": [{"v": 1e400}]}', "application/json", 400, "body"),
        (
            '{"task": "x", "payloads": [{"v": 2e0, "n": 36893488147419103232}]}',
            "application/json",
            400,
            "body",
        ),
        ("[" * 100_000 + "]" * 100_000, "application/json", 413, "body"),
    ],
)
def test_dispatch_refuses_bodies_that_are_not_acceptable_json(
    http: FlaskClient,
    fake: fakeredis.FakeRedis,
    data: str,
    content_type: str,
    status: int,
    field: str,
) -> None:
    response = http.post("/dispatch", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["field"] == field
    assert fake.exists("tasks") == 0


def test_dispatch_refuses_deeply_nested_json_without_a_server_error(
    fake: fakeredis.FakeRedis,
) -> None:
    http = make_client(fake)
    response = http.post(
        "/dispatch", data="[" * 100_000, content_type="application/json"
    )
    assert response.status_code == 400


def test_dispatch_answers_503_when_redis_is_down() -> None:
    http = make_client(unreachable())
    response = http.post("/dispatch", json={"num_messages": 2})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {
        "error": "redis unavailable",
        "reason": "redis unreachable",
    }


def test_dispatch_paced_and_interrupted_reports_exactly_what_was_written(
    server: fakeredis.FakeServer, fake: fakeredis.FakeRedis
) -> None:
    def cut_redis_after_two_entries() -> None:
        eventually(lambda: fake.xlen("tasks") >= 2, every_s=0.001)
        server.connected = False

    cutter = threading.Thread(target=cut_redis_after_two_entries)
    cutter.start()
    response = make_client(fake).post(
        "/dispatch", json={"num_messages": 20, "delay": 0.02}
    )
    cutter.join()
    server.connected = True
    assert response.status_code == 503
    written = response.get_json()["entry_ids"]
    assert 2 <= len(written) < 20
    assert written == [entry_id for entry_id, _ in entries(fake)]


def test_results_are_404_until_stored_then_200(
    http: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    assert http.get("/results/1-0").status_code == 404
    fake.hset("{tasks}:results:0", "1-0", json.dumps({"answer": 42}))
    response = http.get("/results/1-0")
    assert response.status_code == 200
    assert response.get_json() == {"entry_id": "1-0", "result": {"answer": 42}}


def test_results_refuse_an_id_that_is_not_an_entry_id(http: FlaskClient) -> None:
    response = http.get("/results/tasks:results:*")
    assert response.status_code == 400
    assert response.get_json()["field"] == "entry_id"


def test_healthz_does_not_need_redis() -> None:
    assert make_client(unreachable()).get("/healthz").status_code == 200


def test_readyz_follows_redis(http: FlaskClient) -> None:
    assert http.get("/readyz").status_code == 200
    response = make_client(unreachable()).get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "redis unavailable",
        "reason": "redis unreachable",
    }


def test_unknown_routes_and_methods_answer_json(http: FlaskClient) -> None:
    missing = http.get("/nope")
    assert (missing.status_code, missing.get_json()) == (404, {"error": "not found"})
    wrong = http.get("/dispatch")
    assert (wrong.status_code, wrong.get_json()) == (
        405,
        {"error": "method not allowed"},
    )


def test_metrics_count_accepted_and_refused_messages(http: FlaskClient) -> None:
    post(http, {"num_messages": 3})
    post(http, {"num_messages": 0})
    text = http.get("/metrics").get_data(as_text=True)
    assert 'dispatcher_messages_total{outcome="accepted"} 3.0' in text
    assert 'dispatcher_http_requests_total{code="400",endpoint="/dispatch"} 1.0' in text


class BrokenRedis(fakeredis.FakeRedis):
    """A client whose pipeline fails with an error that is not Redis's (a bug)."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        raise RuntimeError("secret detail of the failure")


def test_an_unexpected_error_is_500_internal_error_with_no_detail(
    server: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    broken = BrokenRedis(server=server, decode_responses=True)
    response = make_client(broken).post("/dispatch", json={"num_messages": 1})
    assert (response.status_code, response.get_json()) == (
        500,
        {"error": "internal error"},
    )
    assert b"secret detail" not in response.data and b"Traceback" not in response.data
    assert "secret detail of the failure" in caplog.text  # the log has it, for us


@pytest.mark.parametrize(
    ("payload", "status", "rule"),
    [
        ({"blob": "x" * 300}, 413, "is over 256 bytes as JSON"),
        ({"a": {"b": {"c": {"d": {}}}}}, 400, "nests objects and lists over 4 deep"),
        ({"a": {"b": {"c": {}}}}, 202, None),
    ],
)
def test_payload_size_and_depth_limits_name_the_payload(
    fake: fakeredis.FakeRedis, payload: dict[str, Any], status: int, rule: str | None
) -> None:
    http = make_client(fake, max_payload_bytes=256, max_payload_depth=4)
    body = {"task": "demo", "payloads": [{"ok": 1}, payload]}
    response = http.post("/dispatch", json=body)
    assert response.status_code == status
    if rule:
        assert response.get_json()["field"] == "payloads[1]"
        assert response.get_json()["rule"] == rule
        assert fake.exists("tasks") == 0  # the valid first payload was not written
