"""The console in a real browser (Debian's Chromium driven by Playwright) against real
processes: a private redis-server, the dispatcher (gunicorn) and a consumer. One
browser and one stack for the module; each story saves screenshots of its pages under
its tmp_path."""

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from redis.typing import EncodableT, FieldT

from harness.processes import Service
from harness.redis_server import EPHEMERAL
from harness.stack import Stack
from pipeline_core.keys import Queue
from tests.conftest import (
    eventually,
    require_module,
    require_redis_server,
    require_tool,
)
from tests.factories import entry_ids

if TYPE_CHECKING:  # imported by the fixture, which fails under CI when it is missing
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.timeout(60)

OPERATOR, VIEWER = "operator-" + "o" * 24, "viewer-" + "v" * 24
CLIENT = "client-" + "c" * 24  # /dispatch only: it never opens the console
QUEUE = Queue()
FAST = {"CLAIM_IDLE_MS": "300", "CLAIM_INTERVAL_MS": "50", "BLOCK_MS": "100",
        "MAX_DELIVERIES": "1", "TASK_MODULES": "tests.console_tasks",
        "TRIM_INTERVAL_MS": "600000"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis and the dispatcher with tokens (no anonymous access); consumers are
    started by the stories that need work to flow."""
    require_redis_server()
    dispatcher = {"DISPATCH_ALLOW_ANONYMOUS": "0", "DISPATCH_TOKENS": CLIENT,
                  "OPERATOR_TOKENS": OPERATOR, "VIEWER_TOKENS": VIEWER,
                  "CONSOLE_SECRET_KEY": "s" * 40, "CLAIM_IDLE_MS": "300"}  # fmt: skip
    started = Stack(
        tmp_path_factory.mktemp("console"), consumers=0, redis_options=EPHEMERAL,
        dispatcher_env=dispatcher, consumer_env=FAST,
    ).start()  # fmt: skip
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    require_tool("chromium", "chromium")
    require_module("playwright", "playwright")
    from playwright.sync_api import sync_playwright

    from harness.browser import launch

    with sync_playwright() as playwright:
        started = launch(playwright)
        yield started
        started.close()


@pytest.fixture
def r(stack: Stack) -> Iterator[redis.Redis]:
    """The stack's Redis, emptied (the stats stream too: the sampler goes on)."""
    assert stack.redis is not None
    with stack.redis.client() as client:
        client.flushdb()
        yield client


@pytest.fixture
def consumer(stack: Stack) -> Iterator[Service]:
    service = stack.start_consumer("c1")
    eventually(stack.consumers_connected, timeout_s=20)
    yield service
    service.stop(show_log=False)


def page_of(browser: "Browser", stack: Stack, token: str | None) -> "Page":
    """A fresh browser context (no cookies), signed in with `token` if given."""
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{stack.base_url}/ui/")
    if token is not None:
        page.fill("#token", token)
        page.click("#signin")
        page.wait_for_url("**/ui/")
    return page


def shot(page: "Page", tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / f"{name}.png", full_page=True)


def dispatch(stack: Stack, body: object) -> list[str]:
    request = urllib.request.Request(
        f"{stack.base_url}/dispatch", json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        entry_ids: list[str] = json.loads(answer.read())["entry_ids"]
        return entry_ids


def add_dead_letters(client: redis.Redis, count: int) -> None:
    """Dead letters of other failures, for a filter to see past."""
    with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            error = f"ValueError: noise {n}"
            fields: dict[FieldT, EncodableT] = {"task": "demo", "error": error}
            pipe.xadd(QUEUE.dead_letter_stream, fields)
        pipe.execute()


def test_console_sign_in_refuses_a_wrong_token_and_accepts_a_right_one(
    browser: "Browser", stack: Stack, tmp_path: Path
) -> None:
    page = page_of(browser, stack, None)
    assert page.url.endswith("/ui/signin")
    shot(page, tmp_path, "sign-in")
    for wrong in ("wrong-" + "w" * 24, CLIENT):
        page.fill("#token", wrong)
        page.click("#signin")
        assert "does not open the console" in page.inner_text("#signin-error")
    shot(page, tmp_path, "sign-in-refused")
    page.fill("#token", OPERATOR)
    page.click("#signin")
    page.wait_for_url("**/ui/")
    assert page.inner_text("#role") == "operator"
    shot(page, tmp_path, "overview")
    page.context.close()


def test_console_overview_numbers_equal_xinfo(
    browser: "Browser", stack: Stack, r: redis.Redis, tmp_path: Path
) -> None:
    for n in range(7):
        r.xadd(QUEUE.stream, {"task": "demo", "payload": json.dumps({"n": n})})
    r.xgroup_create(QUEUE.stream, QUEUE.group, "0")
    # the group now holds 3 entries pending for "ghost", 4 never delivered
    r.xreadgroup(QUEUE.group, "ghost", {QUEUE.stream: ">"}, count=3)
    add_dead_letters(r, 2)
    page = page_of(browser, stack, VIEWER)
    names = ("length", "lag", "pending", "dead-letters", "consumers-alive",
             "oldest-pending")  # fmt: skip
    shown = {name: page.get_attribute(f"#{name}", "data-value") for name in names}
    [group] = r.xinfo_groups(QUEUE.stream)
    assert shown["length"] == str(r.xinfo_stream(QUEUE.stream)["length"]) == "7"
    assert (shown["lag"], shown["pending"]) == (
        str(group["lag"]),
        str(group["pending"]),
    )
    assert shown["dead-letters"] == str(r.xlen(QUEUE.dead_letter_stream)) == "2"
    assert shown["consumers-alive"] == str(group["consumers"]) == "1"
    oldest = r.xpending(QUEUE.stream, QUEUE.group)["min"]
    assert float(shown["oldest-pending"] or "nan") == pytest.approx(
        (page.evaluate("Date.now()") - int(oldest.split("-")[0])) / 1000, abs=5
    )
    shot(page, tmp_path, "overview")
    page.click("text=Consumers")
    assert "ghost" in page.inner_text("#consumers")
    shot(page, tmp_path, "consumers")
    page.click("text=Pending")
    assert page.locator("#pending tbody tr").count() == 3
    shot(page, tmp_path, "pending")
    page.context.close()


def test_console_chart_shows_throughput_while_work_flows(
    browser: "Browser", stack: Stack, r: redis.Redis, consumer: Service, tmp_path: Path
) -> None:
    flowing = threading.Event()
    flowing.set()

    def load() -> None:  # 20 tasks every 0.1 s until the chart has seen them
        while flowing.is_set():
            dispatch(stack, {"num_messages": 20})
            threading.Event().wait(0.1)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:
        page = page_of(browser, stack, OPERATOR)

        def rates() -> bool:  # polled from here: the CSP forbids evaluating strings
            shown = [page.inner_text(f"#rate-{n}") for n in ("acked", "dispatched")]
            return all(
                text[0].isdigit() and float(text.rstrip("kM")) > 0 for text in shown
            )

        eventually(rates, timeout_s=30, every_s=0.5)  # two samples, 5 s apart
        assert page.locator("#throughput-chart .acked").count() > 0
        shot(page, tmp_path, "overview-throughput")
    finally:
        flowing.clear()
        sender.join(timeout=10)
    page.context.close()


def test_console_finds_a_dead_letter_by_its_error_text_and_replays_it(
    browser: "Browser", stack: Stack, r: redis.Redis, consumer: Service, tmp_path: Path
) -> None:
    add_dead_letters(r, 300)
    flag, note = tmp_path / "fixed", f"needle-{uuid.uuid4().hex[:8]}"
    [task_id] = dispatch(
        stack, {"task": "fixable", "payloads": [{"flag": str(flag), "note": note}]}
    )
    eventually(lambda: r.xlen(QUEUE.dead_letter_stream) == 301, timeout_s=20)
    page = page_of(browser, stack, OPERATOR)
    page.click("text=Dead letters")
    page.fill("#error", note.upper())  # any case
    page.click("#filter")
    rows = page.locator("#dead tbody tr")
    assert rows.count() == 1 and note in rows.inner_text()
    shot(page, tmp_path, "dead-letters-filtered")
    rows.locator("a").click()
    assert "RuntimeError" in page.inner_text("#fields") and note in page.inner_text(
        "#payload"
    )
    shot(page, tmp_path, "dead-letter")
    flag.touch()  # the fix is deployed: a replay now succeeds
    page.click("#replay")
    shot(page, tmp_path, "confirm-replay")
    page.click("#confirm")
    message = page.inner_text(".flash")
    assert message.startswith("Replayed 1 onto 'tasks'")
    new_id = message.rsplit(" ", 1)[-1].rstrip(".")
    assert new_id != task_id  # a new entry, carrying the task's ID
    shot(page, tmp_path, "replayed")
    # Processed: its result stored under the task's own ID, which a replay keeps.
    stored = eventually(
        lambda: r.hget(QUEUE.results_key(task_id), task_id), timeout_s=20
    )
    assert json.loads(str(stored)) == note
    assert r.xlen(QUEUE.dead_letter_stream) == 300
    page.context.close()


def test_console_viewer_cannot_replay(
    browser: "Browser", stack: Stack, r: redis.Redis, tmp_path: Path
) -> None:
    add_dead_letters(r, 1)
    [dead_id] = entry_ids(r, QUEUE.dead_letter_stream)
    page = page_of(browser, stack, VIEWER)
    page.goto(f"{stack.base_url}/ui/dead/{dead_id}")
    assert page.locator("#replay").count() == 0  # no button to press
    shot(page, tmp_path, "dead-letter-as-viewer")
    token = page.get_attribute("input[name=csrf]", "value") or ""
    form: dict[str, str | float | bool] = {"csrf": token, "ids": dead_id}
    answer = page.request.post(
        f"{stack.base_url}/ui/dead/replay", form={**form, "confirmed": "1"}
    )
    assert answer.status == 403 and "Viewers may look, not act" in answer.text()
    assert r.xlen(QUEUE.dead_letter_stream) == 1 and not r.exists(QUEUE.stream)
    page.context.close()


def test_console_refuses_a_post_without_the_csrf_token(
    browser: "Browser", stack: Stack, r: redis.Redis, tmp_path: Path
) -> None:
    add_dead_letters(r, 1)
    [dead_id] = entry_ids(r, QUEUE.dead_letter_stream)
    page = page_of(browser, stack, OPERATOR)
    page.goto(f"{stack.base_url}/ui/dead/{dead_id}")
    # a forged form: the purge form as another site would post it, without the token
    page.evaluate(
        "document.querySelectorAll('input[name=csrf]').forEach(i => i.remove())"
    )
    page.click("#purge")
    assert "CSRF token is missing or wrong" in page.inner_text("#error-text")
    shot(page, tmp_path, "csrf-refused")
    answer = page.request.post(
        f"{stack.base_url}/ui/dead/purge", form={"ids": dead_id, "confirmed": "1"}
    )
    assert answer.status == 403
    assert r.xlen(QUEUE.dead_letter_stream) == 1
    page.context.close()


def test_console_sign_out_ends_the_session(
    browser: "Browser", stack: Stack, tmp_path: Path
) -> None:
    page = page_of(browser, stack, OPERATOR)
    [signed_in] = page.context.cookies()
    page.click("#signout")
    page.wait_for_url("**/ui/signin")
    shot(page, tmp_path, "signed-out")
    page.goto(f"{stack.base_url}/ui/dead")
    assert page.url.endswith("/ui/signin")
    assert page.request.get(f"{stack.base_url}/ui/api/throughput").status == 401
    # the cookie now holds a fresh session with no user in it (a CSRF token only)
    assert [c["value"] for c in page.context.cookies()] != [signed_in["value"]]
    page.context.close()


def test_console_looks_up_a_delayed_task_and_cancels_it(
    browser: "Browser", stack: Stack, r: redis.Redis, tmp_path: Path
) -> None:
    [later] = dispatch(stack, {"num_messages": 1, "countdown": 3600})
    page = page_of(browser, stack, OPERATOR)
    page.click("text=Delayed")
    assert later in page.inner_text("#delayed")
    shot(page, tmp_path, "delayed")
    page.click(f"text={later}")  # the row links to the task's page
    assert "delayed" in page.inner_text("#task")
    shot(page, tmp_path, "task")
    page.click("#cancel-task")
    page.click("#confirm")
    assert page.inner_text(".flash").startswith(f"Cancelled task {later}")
    assert "cancelled" in page.inner_text("#task")
    assert page.locator("#cancel-task").count() == 0
    shot(page, tmp_path, "task-cancelled")
    assert r.zcard("{tasks}:delayed") == 0
    page.context.close()
