"""The operators' tools over PARTITIONS=3, on one plain Redis (partitions' keys just
live on one node): `pipeline dead|pending|delayed|consumers|task`, the dispatcher's
dead-letter trimming, throughput samples and readiness, and the console's pages, with
every ID partition-qualified (p<i>-<entry ID>)."""

import json
import re

import pytest
import redis
from redis.typing import EncodableT, FieldT

from dispatcher.app import create_app
from dispatcher.console import stats
from dispatcher.housekeeping import trim_all
from dispatcher.settings import Settings
from pipeline_core import dead_partitions
from pipeline_core.group_state import MAX_ID
from pipeline_core.keys import Queue
from pipeline_core.partitions import parts
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.timing import make_timing
from pipeline_core.wire import stream_entries
from tests.factories import GROUP, STREAM, cli_json, run_cli

Q3 = Queue(STREAM, GROUP, partitions=3)
P = parts(Q3)
OPERATOR = "operator-" + "o" * 20


@pytest.fixture
def env(redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """The services' environment with PARTITIONS=3, every partition's group made."""
    for name, value in {"REDIS_URL": redis_url, "STREAM": STREAM, "GROUP": GROUP,
                        "PARTITIONS": "3", "COLUMNS": "200"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for part in P:
        r.xgroup_create(part.stream, GROUP, "0", mkstream=True)
    return r


def add(r: redis.Redis, index: int) -> str:
    """An entry on partition `index`'s stream."""
    entry_id = r.xadd(P[index].stream, {"task": "demo", "payload": "{}"})
    assert isinstance(entry_id, str)
    return entry_id


def dead_letter(r: redis.Redis, index: int, entry_id: str = "*", **more: str) -> str:
    """A dead letter in partition `index`, as the consumer writes it."""
    fields: dict[FieldT, EncodableT] = {
        "task": "demo", "payload": json.dumps({"n": index}), "source_id": "1-0",
        "error": "boom", "deliveries": "5", "consumer": "c1",
    }  # fmt: skip
    fields.update(more)
    dead_id = r.xadd(P[index].dead_letter_stream, fields, id=entry_id)
    assert isinstance(dead_id, str)
    return dead_id


def test_dead_letters_merge_in_entry_id_then_partition_order_from_a_cursor(
    r: redis.Redis,
) -> None:
    # Equal entry IDs in two partitions: the partition breaks the tie, both ways.
    dead_letter(r, 0, "5-0"), dead_letter(r, 2, "5-0"), dead_letter(r, 1, "6-0")
    assert [i for i, _ in dead_partitions.scan(r, Q3)] == ["p0-5-0", "p2-5-0", "p1-6-0"]
    assert [i for i, _ in dead_partitions.scan(r, Q3, after="p0-5-0")] == [
        "p2-5-0",
        "p1-6-0",
    ]
    newest = [i for i, _ in dead_partitions.scan(r, Q3, True, after="p1-6-0")]
    assert newest == ["p2-5-0", "p0-5-0"]
    assert [i for i, _ in dead_partitions.scan(r, Q3, True, "p2-5-0")] == ["p0-5-0"]


def test_dead_list_show_replay_purge_over_partitions(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    first, third = dead_letter(env, 0), dead_letter(env, 2, error="other")
    listed = cli_json(capsys, "dead", "list")
    assert [d["dead_id"] for d in listed] == [f"p0-{first}", f"p2-{third}"]
    shown = cli_json(capsys, "dead", "show", f"p2-{third}")
    assert (shown["dead_id"], shown["payload"]) == (f"p2-{third}", {"n": 2})
    code, _, err = run_cli(capsys, "dead", "show", third)  # the partition is missing
    assert code == 2 and "p<partition>-<entry ID>" in err
    [moved] = cli_json(capsys, "dead", "replay", "--error", "other")
    # Back onto partition 2's own stream, and gone from its dead letters.
    entry_id = moved["entry_id"].removeprefix("p2-")
    assert moved == {"dead_id": f"p2-{third}", "entry_id": f"p2-{entry_id}"}
    assert stream_entries(env.xrange(P[2].stream))[0][0] == entry_id
    assert env.xlen(P[2].dead_letter_stream) == 0
    assert env.xlen(P[0].stream) == env.xlen(P[1].stream) == 0
    code, out, _ = run_cli(capsys, "dead", "purge", "--all", "--yes")
    assert code == 0 and "purged 1" in out
    assert env.xlen(P[0].dead_letter_stream) == 0


def test_pending_delayed_and_consumers_over_partitions(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = {i: add(env, i) for i in (1, 2)}
    env.xreadgroup(GROUP, "pod-a", {P[1].stream: ">"})
    env.xreadgroup(GROUP, "pod-b", {P[2].stream: ">"})
    for part in P:  # a consumer gone long ago, a member of every group
        env.xgroup_createconsumer(part.stream, GROUP, "gone")
    rows = cli_json(capsys, "pending")
    assert {row["entry_id"]: row["consumer"] for row in rows} == {
        f"p1-{ids[1]}": "pod-a",
        f"p2-{ids[2]}": "pod-b",
    }
    sender = Sender(SenderSettings(queue=Q3), client=env)
    later = [sender.send("demo", {}, timing=make_timing(countdown_s=s))
             for s in (3600, 60)]  # fmt: skip
    waiting = cli_json(capsys, "delayed")
    assert [w["id"] for w in waiting] == [later[1].id, later[0].id]  # earliest first
    assert all(re.fullmatch(r"p[0-2]-\d+-1\d+", w["id"]) for w in waiting)
    listed = {c["name"]: c["pending"] for c in cli_json(capsys, "consumers", "list")}
    assert listed == {"pod-a": 1, "pod-b": 1, "gone": 0}  # one row per name
    # pod-a and pod-b hold entries in one partition each: only "gone" may go.
    names = [c["name"] for c in cli_json(capsys, "consumers", "prune",
                                        "--idle-ms", "0", "--dry-run")]  # fmt: skip
    assert names == ["gone"]
    assert cli_json(capsys, "consumers", "prune", "--idle-ms", "0") == {
        "pruned": ["gone"]
    }
    for part in P:
        left = {c["name"] for c in env.xinfo_consumers(part.stream, GROUP)}
        assert "gone" not in left


def test_task_status_and_cancel_by_partitioned_id(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    sender = Sender(SenderSettings(queue=Q3), client=env)
    refs = sender.send_many("demo", [{"n": n} for n in range(3)])
    task_id = refs[1].id
    assert cli_json(capsys, "task", task_id)["state"] == "queued"
    cancelled = cli_json(capsys, "task", "cancel", task_id)
    assert (cancelled["id"], cancelled["state"]) == (task_id, "cancelled")
    code, _, err = run_cli(capsys, "task", task_id.split("-", 1)[1])
    assert code == 2 and "p<partition>-<entry ID>" in err


def test_housekeeping_samples_and_readiness_cover_every_partition(
    env: redis.Redis,
) -> None:
    # Dead letters from 1970 in partitions 0 and 1, a fresh one in 2.
    dead_letter(env, 0, "1000-0"), dead_letter(env, 1, "1000-0"), dead_letter(env, 2)
    assert trim_all(env, Q3, 14 * 86_400) == 2
    assert [env.xlen(part.dead_letter_stream) for part in P] == [0, 0, 1]
    assert trim_all(env, Q3, 14 * 86_400) == 0  # each partition's lock: this minute
    for index in (0, 1, 1):
        add(env, index)
    env.xreadgroup(GROUP, "c1", {P[1].stream: ">"}, count=1)
    assert stats.counters(env, Q3) == {"dispatched": 3, "acked": 0, "backlog": 3}
    http = create_app(Settings(queue=Q3), env).test_client()
    assert http.get("/readyz").status_code == 200
    env.xadd(P[2].stream, {"task": "demo", "payload": "{}"}, id=MAX_ID)
    answer = http.get("/readyz")
    assert answer.status_code == 503 and P[2].stream in answer.text


def test_console_shows_totals_and_partitions_and_acts_on_qualified_ids(
    env: redis.Redis,
) -> None:
    for index in (0, 1, 1):
        add(env, index)
    env.xreadgroup(GROUP, "c1", {P[1].stream: ">"}, count=1)
    dead_id = "p2-" + dead_letter(env, 2)
    settings = Settings(tokens=("client-" + "c" * 20,), operator_tokens=(OPERATOR,),
                        console_secret_key="k" * 40, queue=Q3)  # fmt: skip
    http = create_app(settings, env).test_client()
    form = http.get("/ui/signin").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    http.post("/ui/signin", data={"csrf": token[1], "token": OPERATOR})
    token = re.search(r'name="csrf" value="([^"]+)"', http.get("/ui/dead").text)
    assert token is not None  # the session's, after signing in
    overview = http.get("/ui/").text
    for name, total in (("length", 3), ("lag", 2), ("pending", 1),
                        ("dead-letters", 1)):  # fmt: skip
        assert f'id="{name}" data-value="{total}"' in overview
    table = overview.split('id="partitions"')[1].split("</table>")[0]
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in table.split("<tr>")]
    assert [row for row in rows if row] == [
        ["0", P[0].stream, "1", "1", "0", "0", "0"],
        ["1", P[1].stream, "2", "1", "1", "0", "0"],
        ["2", P[2].stream, "0", "0", "0", "1", "0"],
    ]  # partition, stream, length, lag, pending, dead letters, delayed
    assert dead_id in http.get("/ui/dead").text
    assert http.get(f"/ui/dead/{dead_id}").status_code == 200
    assert "p1-" in http.get("/ui/pending").text
    assert http.get("/ui/pending?after=1-0").status_code == 400  # not qualified
    replay = {"csrf": token[1], "ids": dead_id, "confirmed": "1"}
    assert http.post("/ui/dead/replay", data=replay).status_code == 303
    assert env.xlen(P[2].stream) == 1 and env.xlen(P[2].dead_letter_stream) == 0
    later = Sender(SenderSettings(queue=Q3), client=env).send(
        "demo", {}, timing=make_timing(countdown_s=3600)
    )
    assert later.id in http.get("/ui/delayed").text
    assert "delayed" in http.get(f"/ui/tasks?id={later.id}").text
    cancel = {"csrf": token[1], "id": later.id, "confirmed": "1"}
    assert http.post("/ui/tasks/cancel", data=cancel).status_code == 303
    assert "cancelled" in http.get(f"/ui/tasks?id={later.id}").text
