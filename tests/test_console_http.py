"""The console without a browser (Flask's test client, a real Redis): security
headers, cookie flags, sign-in and its rate limit, CSRF, viewer rights, escaping of
markup, and when the console is on at all."""

import logging
import re
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from redis.typing import EncodableT, FieldT
from werkzeug.test import TestResponse

from dispatcher.app import create_app
from dispatcher.console import data
from dispatcher.console.auth import SIGN_IN_ATTEMPTS, fingerprint
from dispatcher.settings import Settings, from_env
from pipeline_core import schedules
from pipeline_core.env import SettingsError
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.timing import make_timing
from tests.factories import DEAD, GROUP, QUEUE, STREAM, add_entry, deliver_to

OPERATOR, VIEWER, CLIENT = (
    "operator-" + "o" * 20,
    "viewer-" + "v" * 20,
    "client-" + "c" * 20,
)
KEY = "k" * 40
PAGES = ("/ui/", "/ui/consumers", "/ui/pending", "/ui/dead", "/ui/dead?error=x",
         "/ui/delayed", "/ui/tasks", "/ui/tasks?id=1-0")  # fmt: skip


def console(client: redis.Redis, **overrides: Any) -> FlaskClient:
    values: dict[str, Any] = {
        "tokens": (CLIENT,), "operator_tokens": (OPERATOR,),
        "viewer_tokens": (VIEWER,), "console_secret_key": KEY,
    }  # fmt: skip
    return create_app(Settings(**{**values, **overrides}), client).test_client()


def csrf(response: TestResponse) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, response.text
    return found.group(1)


def sign_in(http: FlaskClient, token: str, **options: Any) -> TestResponse:
    form = http.get("/ui/signin", **options)
    return http.post("/ui/signin", data={"csrf": csrf(form), "token": token}, **options)


def dead_letter(client: redis.Redis, error: str = "boom", **more: str) -> str:
    """A dead letter as the consumer writes it; `more` fields replace its own."""
    fields: dict[FieldT, EncodableT] = {
        "task": "demo", "payload": "{}", "source_id": "1-0", "error": error,
        "deliveries": "5", "consumer": "c1",
    }  # fmt: skip
    fields.update(more)
    dead_id = client.xadd(DEAD, fields)
    assert isinstance(dead_id, str)
    return dead_id


def test_console_pages_need_a_session_and_the_json_endpoint_says_401(
    r: redis.Redis,
) -> None:
    http = console(r)
    for page in PAGES:
        assert http.get(page).headers["Location"] == "/ui/signin"
    answer = http.get("/ui/api/throughput")
    assert (answer.status_code, answer.json) == (
        401,
        {"error": "sign in to the console"},
    )


def test_console_sign_in_refuses_wrong_and_client_tokens_and_takes_an_operator(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    http = console(r)
    caplog.set_level(logging.INFO)
    for token in ("", "wrong-" + "w" * 20, CLIENT, OPERATOR[:-1]):
        answer = sign_in(http, token)
        assert answer.status_code == 401
        assert "does not open the console" in answer.text
    assert sign_in(http, OPERATOR).headers["Location"] == "/ui/"
    overview = http.get("/ui/")
    assert overview.status_code == 200 and 'id="role">operator' in overview.text
    assert http.get("/ui/api/throughput").status_code == 200
    logs = " ".join(str(record.__dict__) for record in caplog.records)  # extras too
    assert "'who': '" + fingerprint(OPERATOR) + "'" in logs
    assert not any(token in logs for token in (OPERATOR, VIEWER, CLIENT))


def test_console_every_answer_carries_the_security_headers(r: redis.Redis) -> None:
    http = console(r)
    sign_in(http, OPERATOR)
    dead_id = dead_letter(r)
    answers = [http.get(page) for page in (*PAGES, f"/ui/dead/{dead_id}")]
    answers += [http.get("/ui/api/throughput"), http.get("/ui/nowhere")]
    answers += [http.get("/ui/dead/1-1"), http.get("/ui/pending?after=bad")]
    for answer in answers:
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
    assert [a.status_code for a in answers[-3:]] == [404, 404, 400]
    script = http.get("/ui/static/console.js")
    assert script.status_code == 200 and "no-store" not in script.headers.get(
        "Cache-Control", ""
    )
    script.close()
    pages = [a.text for a in answers[:6]]
    assert not any("<script>" in page or " style=" in page for page in pages)


@pytest.mark.parametrize(
    ("options", "secure"),
    [
        ({}, False),
        ({"headers": {"X-Forwarded-Proto": "https"}}, True),
        ({"base_url": "https://localhost"}, True),
    ],
)
def test_console_session_cookie_is_httponly_strict_and_secure_over_https(
    r: redis.Redis, options: dict[str, Any], secure: bool
) -> None:
    cookie = sign_in(console(r), OPERATOR, **options).headers["Set-Cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= flags
    assert "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert ("secure" in flags) is secure


def test_console_sign_out_ends_the_session(r: redis.Redis) -> None:
    http = console(r)
    sign_in(http, OPERATOR)
    overview = http.get("/ui/")
    answer = http.post("/ui/signout", data={"csrf": csrf(overview)})
    assert answer.headers["Location"] == "/ui/signin"
    assert http.get("/ui/").status_code == 302
    assert http.get("/ui/api/throughput").status_code == 401


def test_console_session_ends_when_its_token_is_taken_away(r: redis.Redis) -> None:
    http = console(r)
    sign_in(http, OPERATOR)
    cookie = http.get_cookie("console_session", path="/ui/")
    assert cookie is not None
    rotated = console(r, operator_tokens=("new-operator-" + "n" * 20,))
    rotated.set_cookie("console_session", cookie.value, path="/ui/")
    assert rotated.get("/ui/").headers["Location"] == "/ui/signin"


def test_console_refuses_a_post_without_or_with_a_wrong_csrf_token(
    r: redis.Redis,
) -> None:
    http = console(r)
    sign_in(http, OPERATOR)
    dead_id = dead_letter(r)
    for form in ({}, {"csrf": "forged"}, {"csrf": ""}):
        form |= {"ids": dead_id, "confirmed": "1"}
        for action in ("/ui/dead/purge", "/ui/dead/replay"):
            answer = http.post(action, data=form)
            assert answer.status_code == 403
            assert "CSRF" in answer.text
    assert r.xlen(DEAD) == 1 and not r.exists(STREAM)


def test_console_viewer_sees_no_action_and_gets_403_for_each(r: redis.Redis) -> None:
    http = console(r)
    sign_in(http, VIEWER)
    dead_id = dead_letter(r)
    page = http.get("/ui/dead")
    assert dead_id in page.text and "Replay" not in page.text
    token = csrf(page)  # the sign-out form's: a real session's token
    forms = {"dead/replay": {"ids": dead_id}, "dead/purge": {"scope": "matching"},
             "consumers/prune": {"consumer": "c1"},
             "tasks/cancel": {"id": "1-0"}}  # fmt: skip
    for action, form in forms.items():
        answer = http.post(
            f"/ui/{action}", data={"csrf": token, "confirmed": "1", **form}
        )
        assert answer.status_code == 403
        assert "Viewers may look, not act" in answer.text
    assert r.xlen(DEAD) == 1


def test_console_limits_sign_in_attempts_per_client_address(r: redis.Redis) -> None:
    http = console(r)
    for _ in range(SIGN_IN_ATTEMPTS):
        assert sign_in(http, "wrong-" + "w" * 20).status_code == 401
    refused = sign_in(http, OPERATOR)  # even the right token, from this address
    assert refused.status_code == 429 and "Too many attempts" in refused.text
    elsewhere = {"environ_base": {"REMOTE_ADDR": "10.0.0.7"}}
    assert sign_in(console(r), OPERATOR, **elsewhere).status_code == 303
    other = http  # the same app, another address: its own budget
    assert sign_in(other, OPERATOR, **elsewhere).status_code == 303


def test_console_shows_markup_in_payloads_and_errors_as_text(r: redis.Redis) -> None:
    http = console(r)
    sign_in(http, OPERATOR)
    attack = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    payload = '{"html": "' + attack.replace("'", "") + '"}'
    dead_id = dead_letter(r, attack, payload=payload, consumer="<b>c")
    pages = [
        http.get("/ui/dead").text,
        http.get("/ui/dead?error=<script>").text,
        http.get(f"/ui/dead/{dead_id}").text,
    ]
    for page in pages:
        assert "<script>" not in page and "<img" not in page and "<b>c" not in page
        assert "&lt;script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[2]


def test_console_shows_undecodable_dead_letters_as_escapes(
    r: redis.Redis, redis_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)  # another producer's bytes, not UTF-8
    dead_id = raw.xadd(DEAD, {b"task": b"\xc3\x28", b"payload": b"\xff", b"x": b"y"})
    raw.close()
    http = console(r)
    sign_in(http, OPERATOR)
    assert isinstance(dead_id, bytes)
    for path in ("/ui/dead", f"/ui/dead/{dead_id.decode()}", "/ui/"):
        page = http.get(path)
        assert page.status_code == 200, path
    assert "\\udcc3(" in http.get("/ui/dead").text


def test_console_prune_and_replay_ask_first_then_act(r: redis.Redis) -> None:
    http = console(r)
    sign_in(http, OPERATOR)
    dead_id = dead_letter(r)
    token = csrf(http.get("/ui/"))
    asked = http.post("/ui/dead/replay", data={"csrf": token, "ids": dead_id})
    assert asked.status_code == 200 and "Yes, replay" in asked.text
    assert r.xlen(DEAD) == 1  # asking changed nothing
    done = http.post(
        "/ui/dead/replay", data={"csrf": token, "ids": dead_id, "confirmed": "1"}
    )
    assert (done.status_code, done.headers["Location"]) == (303, "/ui/dead")
    assert r.xlen(DEAD) == 0 and r.xlen(STREAM) == 1
    assert "Replayed 1" in http.get("/ui/dead").text


def test_console_is_off_without_a_key_outside_loopback(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    http = console(r, console_secret_key=None, host="0.0.0.0")
    assert http.get("/ui/").status_code == 404
    assert "console off" in caplog.text
    assert http.get("/healthz").status_code == 200
    local = console(r, console_secret_key=None, host="127.0.0.1")
    assert sign_in(local, OPERATOR).status_code == 303  # a random per-process key


def test_console_opens_without_sign_in_on_an_anonymous_loopback_run(
    r: redis.Redis,
) -> None:
    add_entry(r, "demo")
    nobody: dict[str, Any] = {"operator_tokens": (), "viewer_tokens": ()}
    http = console(r, tokens=(), console_secret_key=None, host="127.0.0.1",
                   allow_anonymous=True, **nobody)  # fmt: skip
    overview = http.get("/ui/")
    assert overview.status_code == 200 and "anonymous (loopback)" in overview.text
    assert "Sign out" not in overview.text
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "ghost")
    assert http.get("/ui/pending").status_code == 200


def test_console_settings_come_from_the_environment_and_refuse_mixups(
    tmp_path: Any,
) -> None:
    (tmp_path / "ops").write_text(f"{OPERATOR}\n")
    (tmp_path / "key").write_text(KEY + "\n")
    env = {"DISPATCH_TOKENS": CLIENT, "OPERATOR_TOKENS_FILE": str(tmp_path / "ops"),
           "VIEWER_TOKENS": VIEWER, "CONSOLE_SECRET_KEY_FILE": str(tmp_path / "key"),
           "CLAIM_IDLE_MS": "1500"}  # fmt: skip
    settings = from_env(env)
    assert settings.operator_tokens == (OPERATOR,)
    assert (settings.viewer_tokens, settings.console_secret_key) == ((VIEWER,), KEY)
    assert settings.claim_idle_ms == 1500
    plain = {"DISPATCH_TOKENS": CLIENT, "OPERATOR_TOKENS": OPERATOR}
    for bad, named in (({"VIEWER_TOKENS": "short"}, "VIEWER_TOKENS"),
                       ({"CONSOLE_SECRET_KEY": "k" * 31}, "CONSOLE_SECRET_KEY"),
                       ({"VIEWER_TOKENS": CLIENT}, "DISPATCH_TOKENS and VIEWER_TOKENS"),
                       ({"VIEWER_TOKENS": OPERATOR, "OPERATOR_TOKENS": OPERATOR},
                        "OPERATOR_TOKENS and VIEWER_TOKENS"),
                       ({"CLAIM_IDLE_MS": "0"}, "CLAIM_IDLE_MS")):  # fmt: skip
        with pytest.raises(SettingsError, match=named) as refused:
            from_env({**plain, **bad})
        assert OPERATOR not in str(refused.value) and CLIENT not in str(refused.value)


def test_console_replays_every_match_in_steps_that_go_on_where_they_stopped(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "ACTION_SCAN_BUDGET", 10)
    http = console(r)
    sign_in(http, OPERATOR)
    ids = [dead_letter(r, "Needle" if n % 4 == 0 else "hay") for n in range(25)]
    token = csrf(http.get("/ui/dead"))
    form = {"csrf": token, "scope": "matching", "error": "needle"}
    asked = http.post("/ui/dead/replay", data=form)
    assert "Replay 3 dead letters?" in asked.text and ids[9] in asked.text
    # each confirmed step examines 10 letters and replays the matches among them
    done = http.post("/ui/dead/replay", data={**form, "confirmed": "1"})
    page = http.get(done.headers["Location"])
    assert "Replayed 3" in page.text and f'name="after" value="{ids[9]}"' in page.text
    done = http.post(
        "/ui/dead/replay", data={**form, "after": ids[9], "confirmed": "1"}
    )
    assert "Replayed 2" in http.get(done.headers["Location"]).text
    done = http.post(
        "/ui/dead/replay", data={**form, "after": ids[19], "confirmed": "1"}
    )
    last = http.get(done.headers["Location"])
    assert "Replayed 2" in last.text and 'id="go-on"' not in last.text
    assert r.xlen(STREAM) == 7 and r.xlen(DEAD) == 18


def test_console_looks_a_task_up_and_cancels_it_after_asking(r: redis.Redis) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    sender = Sender(SenderSettings(), client=r)
    later = sender.send("resize", {}, timing=make_timing(countdown_s=3600))
    foreign = r.xadd(STREAM, {"task": "<b>x", "payload": "{}"})  # another producer's
    assert isinstance(foreign, str)
    http = console(r)
    sign_in(http, OPERATOR)
    shown = http.get(f"/ui/tasks?id={foreign}").text
    assert "&lt;b&gt;x" in shown and "<b>x" not in shown
    page = http.get(f"/ui/tasks?id={later.id}")
    assert "delayed" in page.text and "due_at" in page.text
    token = csrf(page)
    asked = http.post("/ui/tasks/cancel", data={"csrf": token, "id": later.id})
    assert "Yes, cancel" in asked.text and later.status()["state"] == "delayed"
    done = http.post(
        "/ui/tasks/cancel", data={"csrf": token, "id": later.id, "confirmed": "1"}
    )
    assert done.headers["Location"] == f"/ui/tasks?id={later.id}"
    assert later.status()["state"] == "cancelled"
    page = http.get(done.headers["Location"])
    assert f"Cancelled task {later.id}" in page.text and "Cancel…" not in page.text
    again = http.post(
        "/ui/tasks/cancel", data={"csrf": token, "id": later.id, "confirmed": "1"}
    )
    assert "is cancelled: left alone" in http.get(again.headers["Location"]).text
    assert "not-an-id" in http.get("/ui/tasks?id=not-an-id").text
    assert "No task 1-0" in http.get("/ui/tasks?id=1-0").text


def test_console_lists_tasks_waiting_to_be_due_and_the_schedules(
    r: redis.Redis,
) -> None:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    sender = Sender(SenderSettings(), client=r)
    soon = sender.send("demo", {}, timing=make_timing(countdown_s=0.01))
    later = sender.send("resize", {}, timing=make_timing(countdown_s=3600))
    schedules.tick(
        schedules.tick_script(r), QUEUE, "nightly", (None, 4_102_444_800_000), []
    )
    http = console(r)
    sign_in(http, OPERATOR)
    page = http.get("/ui/delayed").text
    assert page.index(soon.id) < page.index(later.id)  # the earliest first
    assert "overdue" in page and "nightly" in page
    assert f'href="/ui/tasks?id={later.id}"' in page
