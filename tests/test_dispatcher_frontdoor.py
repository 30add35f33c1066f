"""The front door's limits through the HTTP layer (fakeredis: no stream semantics
matter here): chunked bodies, values counted before parsing, lone surrogates, refused
messages counted, and paced dispatches bounded in time and in number."""

import io
import json
import threading
import time
import tracemalloc
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from dispatcher.app import create_app
from dispatcher.publisher import OUT_OF_TIME, PublishInterruptedError, publish_paced
from dispatcher.settings import Settings
from tests.conftest import eventually
from tests.factories import entries


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)


def make_client(client: Any, **overrides: Any) -> FlaskClient:
    settings = Settings(**{"allow_anonymous": True, **overrides})
    return create_app(settings, client).test_client()


def post_chunked(http: FlaskClient, data: bytes) -> Any:
    """A chunked body as gunicorn hands it over: no Content-Length, the stream ends
    where the body does (wsgi.input_terminated)."""
    return http.post(
        "/dispatch",
        input_stream=io.BytesIO(data),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_frontdoor_refuses_a_chunked_body_over_the_limit(
    fake: fakeredis.FakeRedis,
) -> None:
    http = make_client(fake, max_body_bytes=4096)
    # Valid JSON padded past the limit: cut at 4096 bytes it would still parse.
    response = post_chunked(http, b'{"num_messages": 1}' + b" " * 5000)
    assert response.status_code == 413
    assert response.get_json()["field"] == "body"
    assert fake.exists("tasks") == 0
    assert post_chunked(http, b'{"num_messages": 1}' + b" " * 4000).status_code == 202


def test_frontdoor_counts_json_values_before_parsing(
    fake: fakeredis.FakeRedis,
) -> None:
    http = make_client(fake)  # the default limits
    bomb = b'{"task": "x", "payloads": [{"a": [' + b"[]," * 700_000 + b"[]]}]}"
    tracemalloc.start()
    response = http.post("/dispatch", data=bomb, content_type="application/json")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response.status_code == 413
    assert response.get_json()["field"] == "body"
    # Parsed, the 2 MiB body would build 700,000 lists (about 50 MiB); refused before
    # parsing, what was traced is the body and a little more.
    assert peak < 4 * len(bomb), peak


def test_frontdoor_refuses_a_lone_surrogate_naming_the_payload(
    fake: fakeredis.FakeRedis,
) -> None:
    http = make_client(fake)
    body = {"task": "demo", "payloads": [{"ok": 1}, {"text": "\ud800"}]}
    response = http.post(
        "/dispatch", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["field"] == "payloads[1]"
    assert fake.exists("tasks") == 0


def refused(http: FlaskClient) -> float:
    text = http.get("/metrics").get_data(as_text=True)
    line = next(x for x in text.splitlines() if 'outcome="refused"' in x)
    return float(line.split()[-1])


@pytest.mark.parametrize(
    ("data", "content_type", "messages"),
    [
        ('{"task": "x", "payloads": [{}, 3, {}]}', "application/json", 3),
        ('{"num_messages": 7, "delay": -1}', "application/json", 7),
        ('{"num_messages": 0}', "application/json", 1),
        ("{not json", "application/json", 1),
        ('{"num_messages": 7}', "text/plain", 1),
    ],
)
def test_frontdoor_counts_refused_messages(
    fake: fakeredis.FakeRedis, data: str, content_type: str, messages: int
) -> None:
    http = make_client(fake)
    http.post("/dispatch", data=data, content_type=content_type)
    assert refused(http) == messages


def test_frontdoor_counts_a_401_as_one_refused_message(
    fake: fakeredis.FakeRedis,
) -> None:
    http = make_client(fake, allow_anonymous=False, tokens=("t" * 16,))
    assert http.post("/dispatch", json={"num_messages": 5}).status_code == 401
    assert refused(http) == 1


class SlowRedis(fakeredis.FakeRedis):
    """Every XADD takes 0.1 s: a Redis that answers, slowly."""

    def xadd(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.1)
        return super().xadd(*args, **kwargs)


def test_frontdoor_paced_dispatch_stops_at_max_pacing_s_with_slow_writes() -> None:
    slow = SlowRedis(server=fakeredis.FakeServer(), decode_responses=True)
    http = make_client(slow, max_pacing_s=0.25)
    started = time.monotonic()
    # Pacing alone takes 0.1 s; the writes take 0.1 s each on top.
    response = http.post("/dispatch", json={"num_messages": 3, "delay": 0.05})
    took_s = time.monotonic() - started
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == f"{OUT_OF_TIME}; only entry_ids were written"
    assert 1 <= len(body["entry_ids"]) < 3
    assert body["entry_ids"] == [entry_id for entry_id, _ in entries(slow)]
    assert took_s < 0.25 + 0.1 + 0.5  # the deadline, the write in flight, a margin


def test_frontdoor_publish_paced_starts_no_write_past_the_deadline(
    fake: fakeredis.FakeRedis,
) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    # Writes at 0, 1 and 2 s; the one at 3 s would pass the 2.5 s deadline.
    with pytest.raises(PublishInterruptedError) as raised:
        publish_paced(
            fake, "tasks", "demo", ["{}"] * 5, 1.0, 2.5, lambda: now[0], sleep
        )
    assert raised.value.why == OUT_OF_TIME
    assert len(raised.value.entry_ids) == 3 == len(entries(fake))
    assert now[0] == 2.0  # it did not sleep towards a write it would not make


def test_frontdoor_caps_concurrent_paced_dispatches(fake: fakeredis.FakeRedis) -> None:
    app = create_app(Settings(allow_anonymous=True, max_paced_requests=1), fake)
    first: list[int] = []
    pacing = threading.Thread(
        target=lambda: first.append(
            app.test_client()
            .post("/dispatch", json={"num_messages": 4, "delay": 0.05})
            .status_code
        )
    )
    pacing.start()
    eventually(lambda: fake.xlen("tasks") >= 1)  # the first one is pacing
    response = app.test_client().post(
        "/dispatch", json={"num_messages": 2, "delay": 0.01}
    )
    pacing.join()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"] == "too many paced dispatches"
    assert first == [202]
    assert fake.xlen("tasks") == 4  # the refused one wrote nothing
    # Unpaced dispatches are not capped; a paced one fits again once the first ended.
    client = app.test_client()
    assert client.post("/dispatch", json={"num_messages": 2}).status_code == 202
    paced = client.post("/dispatch", json={"num_messages": 2, "delay": 0.01})
    assert paced.status_code == 202
