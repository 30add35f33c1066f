"""Property-based: whatever body and headers arrive at /dispatch, the answer is a
well-formed 2xx or 4xx, never a 5xx, and a 4xx writes nothing to the stream."""

import json
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.app import create_app
from dispatcher.settings import Settings

TOKEN = "fuzz-token-" + "z" * 20
SERVER = fakeredis.FakeServer()
STORE = fakeredis.FakeRedis(server=SERVER, decode_responses=True)


def limited(**access: Any) -> Settings:
    """Small limits, so that generated bodies reach every rule."""
    return Settings(
        max_messages=20,
        max_pacing_s=0.0,
        max_body_bytes=4096,
        max_payload_bytes=256,
        max_payload_depth=4,
        **access,
    )


OPEN = create_app(limited(allow_anonymous=True), STORE).test_client()
GUARDED = create_app(limited(tokens=(TOKEN,)), STORE).test_client()
# What a header can carry at all (HTTP forbids control characters in field values).
# Hundreds of examples per test: seconds each, more on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(60)
HEADER_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(["task", "payloads", "num_messages", "delay", "other"])
bodies = st.one_of(
    json_values,
    st.dictionaries(fields, json_values, max_size=4),
    st.fixed_dictionaries(
        {"task": st.sampled_from(["demo", "resize", "a b", ""]) | json_values},
        optional={
            "payloads": st.lists(json_values, max_size=6) | json_values,
            "num_messages": st.integers(-3, 30) | json_values,
            "delay": st.floats(-1, 1, allow_nan=False) | json_values,
        },
    ),
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "", "application/json; charset=latin-1"]
)


def answer(
    client: FlaskClient, data: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    before = STORE.xlen("tasks")
    response = client.post("/dispatch", data=data, headers=headers)
    status = response.status_code
    assert 200 <= status < 500, (status, data[:200], response.data[:200])
    body = response.get_json()
    assert isinstance(body, dict)  # JSON, whatever happened
    written = STORE.xlen("tasks") - before
    if status >= 400:
        assert written == 0, (status, body)
    else:
        assert written == body["count"] == len(body["entry_ids"])
    return status, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, content_type=content_types)
def test_dispatch_any_json_body_is_a_clean_2xx_or_4xx(
    body: Any, content_type: str
) -> None:
    data = json.dumps(body).encode()
    answer(OPEN, data, {"Content-Type": content_type} if content_type else {})


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=6000), content_type=content_types)
def test_dispatch_any_bytes_are_a_clean_2xx_or_4xx(
    data: bytes, content_type: str
) -> None:
    answer(OPEN, data, {"Content-Type": content_type} if content_type else {})


@settings(max_examples=300, deadline=None)
@given(
    authorization=st.one_of(
        st.text(HEADER_TEXT, max_size=60),
        st.builds(lambda t: f"Bearer {t}", st.text(HEADER_TEXT, max_size=40)),
        st.just(f"Bearer {TOKEN}"),
        st.just(f"bearer {TOKEN}"),
        st.just(f"Bearer {TOKEN[:-1]}"),
    ),
    body=bodies,
)
def test_dispatch_without_the_right_token_is_401_and_writes_nothing(
    authorization: str, body: Any
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": authorization}
    status, answered = answer(GUARDED, json.dumps(body).encode(), headers)
    if authorization != f"Bearer {TOKEN}":
        assert (status, answered["error"]) == (401, "unauthorized")


@settings(max_examples=200, deadline=None)
@given(
    entry_id=st.text(HEADER_TEXT, min_size=1, max_size=40).filter(
        lambda t: "/" not in t and "?" not in t and "#" not in t
    )
    | st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 2**70), st.integers(0, 99)),
    authorization=st.sampled_from([None, f"Bearer {TOKEN}", "Bearer wrong-one"]),
)
def test_results_answer_401_without_the_token_and_never_a_5xx(
    entry_id: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = GUARDED.get(f"/results/{entry_id}", headers=headers)
    assert 200 <= response.status_code < 500, (entry_id, response.data[:200])
    assert isinstance(response.get_json(), dict)
    if authorization != f"Bearer {TOKEN}":
        assert response.status_code == 401
