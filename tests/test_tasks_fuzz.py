"""Property-based, on a real Redis (the task scripts run in it): whatever ID reaches
`GET/DELETE /tasks/<id>` and whatever `Idempotency-Key` header reaches `/dispatch`, the
answer is a JSON 2xx or 4xx, never a 5xx; a refused dispatch writes nothing."""

import json
from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.app import create_app
from dispatcher.settings import Settings
from pipeline_core.connection import ENCODING_ERRORS

TOKEN = "fuzz-token-" + "t" * 20
HEADER_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
ANY_TEXT = st.characters(exclude_categories=["Cs"])
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, encoding_errors=ENCODING_ERRORS
    )
    client.flushdb()
    client.xgroup_create("tasks", "workers", "0", mkstream=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def app(store: redis.Redis) -> FlaskClient:
    return create_app(Settings(tokens=(TOKEN,)), store).test_client()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
ids = st.text(ANY_TEXT, min_size=1, max_size=40).filter(
    lambda t: not any(c in t for c in "/?#%") and t.strip() == t
) | st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 2**70), st.integers(0, 2**70))


@FUZZ
@given(task_id=ids, method=st.sampled_from(["GET", "DELETE"]))
def test_tasks_any_id_is_a_clean_json_answer(
    app: FlaskClient, task_id: str, method: str
) -> None:
    response = app.open(f"/tasks/{task_id}", method=method, headers=AUTH)
    assert response.status_code in (200, 400, 404, 409), (task_id, response.data)
    assert isinstance(response.get_json(), dict)


@FUZZ
@given(key=st.text(HEADER_TEXT, max_size=300), payload=st.integers(0, 3))
def test_dispatch_any_idempotency_key_is_a_clean_answer(
    app: FlaskClient, store: redis.Redis, key: str, payload: int
) -> None:
    before = store.xlen("tasks")
    body = {"task": "demo", "payloads": [{"n": payload}]}
    headers = {**AUTH, "Content-Type": "application/json", "Idempotency-Key": key}
    response = app.post("/dispatch", data=json.dumps(body), headers=headers)
    answer = response.get_json()
    assert isinstance(answer, dict)
    written = store.xlen("tasks") - before
    if response.status_code == 202:
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        assert written == (0 if replayed else 1)
        assert answer["task_ids"] == answer["entry_ids"]
    else:
        assert response.status_code in (400, 422), (key, answer)
        assert answer["field"] == "Idempotency-Key" and written == 0
