"""`pipeline`, the operator's command line, against a real Redis in a known state: what
it prints and what it leaves behind."""

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.typing import EncodableT, FieldT

from cli.__main__ import main
from harness.processes import ROOT, Service, free_port, http_ok
from harness.redis_server import RedisServer
from pipeline_core import schedules
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.timing import make_timing
from pipeline_core.wire import stream_entries as entries
from tests.conftest import eventually, require_redis_server
from tests.factories import (
    DEAD,
    GROUP,
    QUEUE,
    STREAM,
    add_entry,
    cli_json,
    deliver_to,
    make_worker,
    pending,
    run_cli,
)

TOKEN = "cli-token-" + "k" * 20


@pytest.fixture
def env(redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """The services' environment, pointed at the test Redis; wide tables."""
    for name, value in {"REDIS_URL": redis_url, "STREAM": STREAM, "GROUP": GROUP,
                        "CLAIM_IDLE_MS": "1000", "COLUMNS": "200"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return r


def dead_letter(r: redis.Redis, task: str, error: str, payload: object) -> str:
    """A dead letter as the consumer writes one (the original fields and four more)."""
    fields: dict[FieldT, EncodableT] = {"task": task, "payload": json.dumps(payload)}
    fields |= {
        "source_id": "1-0",
        "error": error,
        "deliveries": "5",
        "consumer": "pod-x",
    }
    dead_id = r.xadd(DEAD, fields)
    assert isinstance(dead_id, str)
    return dead_id


def test_status_shows_the_group_consumers_and_warnings(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    make_worker(env, {})
    [add_entry(env, "demo") for _ in range(3)]
    deliver_to(env, "pod-a", count=1)
    dead_letter(env, "resize", "RuntimeError: boom", {"x": 1})
    data = cli_json(capsys, "status")
    assert (data["length"], data["lag"], data["pending"]) == (3, 2, 1)
    assert {c["name"]: c["pending"] for c in data["consumers"]} == {"pod-a": 1}
    assert data["dead_letters"] == 1
    assert data["persistence"]["appendonly"] == "no"  # the test Redis keeps nothing
    assert any("appendonly is off" in warning for warning in data["warnings"])
    code, out, _ = run_cli(capsys, "status")
    assert code == 0
    assert "pod-a" in out and "warning: appendonly is off" in out


def test_status_watch_refreshes_until_ctrl_c(
    env: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_worker(env, {})
    add_entry(env, "demo")
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt  # the operator presses Ctrl-C

    monkeypatch.setattr("cli.status.time.sleep", sleep)
    code, out, _ = run_cli(capsys, "status", "--watch", "0.5", "--json")
    assert code == 0 and pauses == [0.5, 0.5]
    assert out.count('"stream": "tasks"') == 2  # refreshed once before Ctrl-C


def test_pending_lists_oldest_first_and_says_which_are_claimable(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    make_worker(env, {})
    ids = [add_entry(env, "demo") for _ in range(3)]
    deliver_to(env, "pod-a", count=2)
    deliver_to(env, "pod-b", count=1)
    env.xclaim(STREAM, GROUP, "pod-a", 0, [ids[0]], idle=5000, justid=True)
    rows = cli_json(capsys, "pending")
    assert [row["entry_id"] for row in rows] == ids
    assert [row["past_claim_idle"] for row in rows] == [True, False, False]
    assert [
        r["entry_id"] for r in cli_json(capsys, "pending", "--consumer", "pod-b")
    ] == ids[2:]
    stale = cli_json(capsys, "pending", "--min-idle-ms", "4000")
    assert [row["entry_id"] for row in stale] == ids[:1]


def test_dead_list_and_show_filter_and_parse(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    boom = dead_letter(env, "resize", "RuntimeError: boom", {"x": 1})
    dead_letter(env, "crop", "unknown task 'crop'", {"y": 2})
    assert [
        d["dead_id"] for d in cli_json(capsys, "dead", "list", "--task", "resize")
    ] == [boom]
    assert len(cli_json(capsys, "dead", "list", "--error", "UNKNOWN")) == 1
    shown = cli_json(capsys, "dead", "show", boom)
    assert (shown["payload"], shown["deliveries"], shown["error"]) == (
        {"x": 1},
        "5",
        "RuntimeError: boom",
    )
    code, _, err = run_cli(capsys, "dead", "show", "1-1")
    assert code == 2 and "no dead letter 1-1" in err


def test_rich_markup_in_redis_text_is_printed_as_text_never_read(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """A payload key or error holding rich markup neither crashes the table ('[/bold]'
    closes nothing) nor plants a terminal hyperlink ('[link=...]')."""
    planted = "[link=https://evil.example]click[/link] [/bold]"
    dead_id = dead_letter(env, "[/bold]", planted, {"[/bold]": planted})
    for argv in (("dead", "list"), ("dead", "show", dead_id)):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
        assert "\x1b]8;" not in out  # no OSC 8 hyperlink escape
    _, listed, _ = run_cli(capsys, "dead", "list")
    assert "[/bold]" in listed and "[link=https://evil.example]" in listed


def test_dead_replay_moves_each_letter_once_with_a_fresh_delivery_count(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    make_worker(env, {})  # the group exists
    boom = dead_letter(env, "resize", "RuntimeError: boom", {"x": 1})
    before = env.xlen(STREAM)
    code, out, _ = run_cli(capsys, "dead", "replay", boom, "--dry-run")
    assert code == 0 and boom in out and env.xlen(DEAD) == 1  # nothing moved
    [moved] = cli_json(capsys, "dead", "replay", boom)
    assert env.xlen(DEAD) == 0 and env.xlen(STREAM) == before + 1
    [(_, fields)] = entries(env.xrange(STREAM, moved["entry_id"], moved["entry_id"]))
    assert fields == {
        "task": "resize",
        "payload": '{"x": 1}',
    }  # the dead-letter fields gone
    assert (
        cli_json(capsys, "dead", "replay", "--all") == []
    )  # a second replay moves nothing
    deliver_to(env, "pod-z")
    [row] = [p for p in pending(env) if p["message_id"] == moved["entry_id"]]
    assert row["times_delivered"] == 1


def test_dead_purge_asks_first_unless_told_yes(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(env, "resize", "RuntimeError: boom", {"x": 1})
    code, _, err = run_cli(capsys, "dead", "purge", "--all")
    assert code == 2 and "--yes" in err and env.xlen(DEAD) == 1
    assert cli_json(capsys, "dead", "purge", "--all", "--yes") == {"purged": 1}
    assert env.xlen(DEAD) == 0
    code, _, err = run_cli(capsys, "dead", "purge")
    assert code == 2 and "say which dead letters" in err


def test_consumers_prune_never_deletes_a_consumer_with_pending_entries(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    make_worker(env, {})
    ids = [add_entry(env, "demo") for _ in range(2)]
    deliver_to(env, "gone-idle", count=1)
    env.xack(STREAM, GROUP, ids[0])
    deliver_to(env, "gone-busy", count=1)
    listed = cli_json(capsys, "consumers", "prune", "--idle-ms", "0", "--dry-run")
    assert [c["name"] for c in listed] == ["gone-idle"]
    pruned = cli_json(capsys, "consumers", "prune", "--idle-ms", "0")
    assert pruned == {"pruned": ["gone-idle"]}
    # gone-busy holds an entry: deleting it would lose that entry for good
    assert {c["name"] for c in env.xinfo_consumers(STREAM, GROUP)} == {"gone-busy"}


@pytest.fixture
def dispatcher(env: redis.Redis, redis_url: str, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # fmt: skip
    port = free_port()
    service = Service("dispatcher", {
        "REDIS_URL": redis_url, "PORT": str(port), "HOST": "127.0.0.1",
        "DISPATCH_TOKENS": TOKEN, "MAX_PAYLOAD_BYTES": "200",
    }, tmp_path / "dispatcher.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: http_ok(f"{url}/healthz"), timeout_s=30)
    monkeypatch.setenv("DISPATCHER_URL", url)
    monkeypatch.setenv("DISPATCH_TOKEN", TOKEN)
    yield url
    service.stop()


def test_dispatch_sends_a_file_in_batches_reports_refusals_and_resumes(
    dispatcher: str,
    env: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    lines = [json.dumps({"n": n}) for n in range(250)]
    lines[30] = "[not an object]"
    lines[120] = json.dumps({"n": 120, "blob": "x" * 300})  # over MAX_PAYLOAD_BYTES
    payloads = tmp_path / "work.jsonl"
    payloads.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(capsys, "dispatch", "demo", "--payloads", str(payloads),
                       "--batch", "50", "--json")  # fmt: skip
    summary = json.loads(out[out.index("{") :])
    assert code == 1  # some lines were refused
    assert (summary["sent"], summary["refused"]) == (250, 1 + 50)
    assert summary["accepted"] == env.xlen(STREAM) == 199
    assert any(
        reason.startswith("line 31: not a JSON object") for reason in summary["reasons"]
    )
    assert any(reason.startswith("line 121:") for reason in summary["reasons"])
    assert (tmp_path / "work.jsonl.progress").read_text().strip() == "250"
    payloads.write_text(payloads.read_text() + json.dumps({"n": 250}) + "\n")
    code, out, _ = run_cli(
        capsys, "dispatch", "demo", "--payloads", str(payloads), "--json"
    )
    resumed = json.loads(out[out.index("{") :])
    assert (resumed["skipped (resumed)"], resumed["accepted"]) == (250, 1)


def test_dispatch_with_a_wrong_token_stops_with_one_line(
    dispatcher: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("DISPATCH_TOKEN", "wrong-" + TOKEN)
    payloads = tmp_path / "one.jsonl"
    payloads.write_text('{"n": 1}\n')
    code, _, err = run_cli(capsys, "dispatch", "demo", "--payloads", str(payloads))
    assert code == 2 and "refused the token" in err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            {"REDIS_URL": "redis://127.0.0.1:{closed}/0"},
            "cannot reach Redis at 127.0.0.1:",
        ),
        (
            {"REDIS_PASSWORD": "wrong"},
            "Redis refused user default: check REDIS_USERNAME",
        ),
        ({"GROUP": "nobody"}, "no group 'nobody' on stream"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_exit(
    tmp_path: Path, setup: dict[str, str], expected: str
) -> None:
    require_redis_server()
    server = RedisServer(tmp_path / "redis", extra=["--requirepass", "right-password"])
    server.start()
    try:
        with redis.Redis(port=server.port, password="right-password") as client:
            client.xgroup_create(STREAM, GROUP, "0", mkstream=True)
        env = {
            "REDIS_URL": server.url,
            "REDIS_PASSWORD": "right-password",
            "PATH": "/usr/bin:/bin",
        }
        env |= {k: v.format(closed=free_port()) for k, v in setup.items()}
        done = subprocess.run([str(ROOT / ".venv" / "bin" / "pipeline"), "status"],
                              env=env, capture_output=True, text=True)  # fmt: skip
    finally:
        server.kill()
    assert done.returncode == 2
    assert done.stderr.startswith(f"pipeline: {expected}"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.fixture
def own_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, RedisServer]]:
    """A dispatcher with a backlog limit of 5, on a Redis of its own (to kill)."""
    require_redis_server()
    server = RedisServer(tmp_path / "redis").start()
    port = free_port()
    service = Service("dispatcher", {
        "REDIS_URL": server.url, "PORT": str(port), "HOST": "127.0.0.1",
        "DISPATCH_TOKENS": TOKEN, "MAX_BACKLOG": "5",
    }, tmp_path / "dispatcher.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: http_ok(f"{url}/healthz"), timeout_s=30)
    monkeypatch.setenv("DISPATCHER_URL", url)
    monkeypatch.setenv("DISPATCH_TOKEN", TOKEN)
    yield url, server
    service.stop()
    server.kill()


def dispatch_in_a_thread(payloads: Path, result: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        result["code"] = main(["dispatch", "demo", "--payloads", str(payloads),
                               "--batch", "5", "--json"])  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_dispatch_retries_a_full_backlog_after_retry_after(
    own_dispatcher: tuple[str, RedisServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, server = own_dispatcher
    payloads = tmp_path / "ten.jsonl"
    payloads.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(10)))
    result: dict[str, Any] = {}
    with server.client() as client:
        thread = dispatch_in_a_thread(payloads, result)
        # The first 5 fill the backlog: the next batch gets 429 until they are done.
        eventually(lambda: client.exists(STREAM) and client.xlen(STREAM) == 5)
        worker = make_worker(client, {"demo": lambda **payload: payload})
        worker.poll_once()
        thread.join(timeout=30)
        # The refused batch went in on a retry (the first 5 were trimmed once done).
        assert client.xinfo_stream(STREAM)["entries-added"] == 10
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1] or "{}")
    assert (result["code"], summary["accepted"], summary["failed"]) == (0, 10, 0)


def test_dispatch_retries_while_redis_is_down(
    own_dispatcher: tuple[str, RedisServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, server = own_dispatcher
    payloads = tmp_path / "three.jsonl"
    payloads.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(3)))
    server.kill()  # every POST gets 503 with Retry-After
    result: dict[str, Any] = {}
    thread = dispatch_in_a_thread(payloads, result)
    eventually(lambda: "failed" not in result and thread.is_alive())
    server.start()  # from its AOF, in the same place
    thread.join(timeout=60)
    with server.client() as client:
        assert client.xlen(STREAM) == 3
    assert result["code"] == 0


def test_task_shows_a_task_and_cancels_one_not_started(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    env.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    task_id = env.xadd(STREAM, {"task": "resize", "payload": "{}"})
    assert isinstance(task_id, str)
    shown = cli_json(capsys, "task", task_id)
    assert (shown["id"], shown["task"], shown["state"]) == (task_id, "resize", "queued")
    code, out, _ = run_cli(capsys, "task", task_id)
    assert code == 0 and "queued" in out and task_id in out
    cancelled = cli_json(capsys, "task", "cancel", task_id)
    assert cancelled["state"] == "cancelled"
    code, _, err = run_cli(capsys, "task", "cancel", task_id)
    assert code == 2 and "only a queued, delayed or retrying task" in err
    code, _, err = run_cli(capsys, "task", "not-an-id")
    assert code == 2 and "milliseconds" in err
    code, _, err = run_cli(capsys, "task", "1-0")
    assert code == 2 and "no task 1-0" in err


def test_delayed_lists_waiting_tasks_and_status_counts_them_with_schedules(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    env.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    sender = Sender(SenderSettings(), client=env)
    later = sender.send("resize", {"n": 1}, timing=make_timing(countdown_s=3600))
    soon = sender.send("demo", {}, timing=make_timing(countdown_s=0.01))
    # No consumer runs: nothing moves the due one, which is soon overdue.
    eventually(
        lambda: cli_json(capsys, "status")["delayed_oldest_overdue_s"] > 0.05,
        timeout_s=10,
    )
    listed = cli_json(capsys, "delayed")
    assert [(row["id"], row["task"], row["attempt"]) for row in listed] == [
        (soon.id, "demo", 0),
        (later.id, "resize", 0),
    ]
    assert listed[0]["due_in_s"] < 0 < 3500 < listed[1]["due_in_s"] <= 3600
    tick = schedules.tick_script(env)
    schedules.tick(tick, QUEUE, "nightly", (None, 4_102_444_800_000), [])
    data = cli_json(capsys, "status")
    assert data["delayed"] == 2
    assert data["schedules"] == [{"task": "nightly", "last_tick": None,
                                  "next_tick": "2100-01-01T00:00:00+00:00",
                                  "last_entry_id": None}]  # fmt: skip
    code, out, _ = run_cli(capsys, "delayed")
    assert code == 0 and "overdue by" in out and later.id in out
    code, out, _ = run_cli(capsys, "status")
    assert code == 0 and "Periodic tasks" in out and "nightly" in out
