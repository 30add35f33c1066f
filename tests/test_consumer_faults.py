"""The worker against Redis faults other than a lost connection: every error reply is
waited out and recovered from (never the end of the consumer), out-of-memory drains,
undecodable entries are contained, and the odd task cannot fool the loop."""

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.typing import EncodableT, FieldT

from cli.__main__ import main as pipeline
from consumer.acks import store_and_ack
from consumer.worker import Worker
from harness.processes import free_port
from pipeline_core.group_state import read_group_state
from tests.conftest import eventually
from tests.factories import (
    DEAD,
    GROUP,
    QUEUE,
    STREAM,
    add_entry,
    dead_letters,
    make_worker,
    pending,
    result_of,
)

ECHO = {"echo": lambda x: x}


def running(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run)
    thread.start()
    return thread


def stop(worker: Worker, thread: threading.Thread) -> None:
    """SIGTERM, as the worker sees it: it stops once its blocked read returns (up to
    BLOCK_MS), and a loaded 2-core machine gets 10 s more."""
    worker.stopping.set()
    thread.join(timeout=worker.settings.block_ms / 1000 + 10)
    assert not thread.is_alive()


def errors(worker: Worker, kind: str) -> float:
    value: float = worker.metrics.redis_errors.labels(kind)._value.get()
    return value


def test_worker_drains_under_oom_acking_without_results(own: redis.Redis) -> None:
    worker = make_worker(own, ECHO)
    ids = [add_entry(own, "echo", {"x": n}) for n in range(5)]
    own.config_set("maxmemory", 1)  # over it already: writes that allocate are refused
    assert worker.poll_once() == 5
    # Pending list: empty. A plain XACK still works under OOM; the results were dropped.
    assert pending(own) == [] and result_of(own, ids[0]) is None
    assert worker.metrics.results_dropped._value.get() == 5
    own.config_set("maxmemory", 0)
    later = add_entry(own, "echo", {"x": 9})
    assert worker.poll_once() == 1 and result_of(own, later) == "9"


def test_a_consumer_starts_and_drains_under_oom_when_its_group_exists(
    own: redis.Redis,
) -> None:
    make_worker(own, ECHO)  # the group exists
    entry_id = add_entry(own, "echo", {"x": 1})
    own.config_set("maxmemory", 1)  # XGROUP CREATE would be refused now: not needed
    worker = Worker(own, make_worker(own, ECHO).settings, ECHO)
    thread = running(worker)
    try:
        eventually(
            lambda: pending(own) == [] and own.xinfo_groups(STREAM)[0]["lag"] == 0
        )
    finally:
        stop(worker, thread)
    assert sum(errors(worker, kind) for kind in ("oom", "other")) == 0
    assert result_of(own, entry_id) is None  # acknowledged, its result dropped


@pytest.mark.parametrize("fault", ["readonly", "misconf"])
def test_worker_waits_out_an_error_reply_and_recovers_by_itself(
    own: redis.Redis, fault: str, tmp_path: Path
) -> None:
    worker = make_worker(own, ECHO, reconnect_max_delay_s=0.1)
    add_entry(own, "echo", {"x": 0})  # the stream and group exist before the fault
    thread = running(worker)
    try:
        eventually(lambda: pending(own) == [] and own.exists(STREAM))
        heal = FAULTS[fault](own, tmp_path)
        eventually(lambda: errors(worker, fault) > 0, timeout_s=10)
        assert thread.is_alive()  # refused, not ended
        heal()
        entry_id = add_entry(own, "echo", {"x": 2})
        eventually(lambda: result_of(own, entry_id) is not None, timeout_s=10)
    finally:
        stop(worker, thread)


def break_with_readonly(client: redis.Redis, tmp_path: Path) -> Any:
    client.replicaof("127.0.0.1", free_port())  # a replica of nobody: writes refused

    def heal() -> None:
        client.replicaof("NO", "ONE")

    return heal


def break_with_misconf(client: redis.Redis, tmp_path: Path) -> Any:
    """A failed snapshot with `stop-writes-on-bgsave-error yes`: Redis answers MISCONF
    to every write, as when its disk is full."""
    data_dir = Path(str(client.config_get("dir")["dir"]))
    client.config_set("save", "3600 1")
    for child in data_dir.iterdir():
        child.unlink()
    data_dir.rmdir()  # the snapshot's temporary file cannot be created any more
    client.bgsave()
    eventually(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err")

    def heal() -> None:
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        client.config_set("dir", str(fresh))
        client.bgsave()
        eventually(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "ok")

    return heal


FAULTS = {"readonly": break_with_readonly, "misconf": break_with_misconf}


def test_worker_recreates_the_group_when_a_blocked_read_is_unblocked(
    r: redis.Redis,
) -> None:
    worker = make_worker(r, ECHO, block_ms=5000, socket_timeout_s=10)
    thread = running(worker)
    try:
        # Blocked now (flag b), not between two reads: the delete must unblock it.
        eventually(lambda: any(c["cmd"] == "xreadgroup" and "b" in c["flags"]
                               for c in r.client_list()))  # fmt: skip
        r.delete(STREAM)  # under the blocked XREADGROUP: Redis answers UNBLOCKED
        eventually(lambda: worker.metrics.group_recreated._value.get() == 1)
        entry_id = add_entry(r, "echo", {"x": 1})
        eventually(lambda: result_of(r, entry_id) is not None, timeout_s=10)
    finally:
        stop(worker, thread)
    assert errors(worker, "unblocked") == 1


def test_undecodable_entries_are_dead_lettered_byte_for_byte_and_readable(
    r: redis.Redis,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = redis.Redis.from_url(redis_url)  # bytes in, bytes out
    worker = make_worker(r, ECHO)
    bad_payload: dict[FieldT, EncodableT] = {
        b"task": b"echo",
        b"payload": b'{"x": "\xff"}',
    }
    bad_task: dict[FieldT, EncodableT] = {b"task": b"\xc3\x28", b"payload": b"{}"}
    garbage: dict[FieldT, EncodableT] = {b"\x00\xff": b"\xff"}
    written = [bad_payload, bad_task, garbage]
    ids = [raw.xadd(STREAM, fields) for fields in written]
    assert worker.poll_once() == 3
    # Pending list: empty. All three sit in the dead-letter stream, as they were.
    assert pending(r) == []
    letters = [fields for _, fields in raw.xrange(DEAD) or [] if fields]
    assert [fields[b"source_id"] for fields in letters] == ids
    for fields, original in zip(letters, written, strict=True):
        assert {k: v for k, v in fields.items() if k in original} == original
    raw.close()
    # Every reader copes: the state, and `pipeline` for people and for scripts.
    assert read_group_state(r, QUEUE).dead_letters == 3
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    for argv in (["dead", "list"], ["dead", "list", "--json"], ["status"]):
        assert pipeline(argv) == 0
    out = capsys.readouterr().out
    # The task name's stray byte, escaped in the table and in the JSON alike.
    assert out.count("\\udcc3(") >= 2


def test_results_that_are_not_finite_json_or_too_large_are_dead_lettered(
    r: redis.Redis,
) -> None:
    tasks = {"nan": lambda: float("nan"), "inf": lambda: [1, float("inf")],
             "big": lambda: "x" * 2000, "fine": lambda: {"none": None}}  # fmt: skip
    worker = make_worker(r, tasks, result_max_bytes=1000)
    ids = [add_entry(r, name) for name in tasks]
    worker.poll_once()
    errors_by_source = {d["source_id"]: d["error"] for d in dead_letters(r)}
    assert errors_by_source[ids[0]].startswith("result is not JSON")
    assert errors_by_source[ids[1]].startswith("result is not JSON")
    assert errors_by_source[ids[2]] == "result is over 1000 bytes as JSON"
    assert ids[3] not in errors_by_source and result_of(r, ids[3]) == '{"none":null}'


def test_a_dead_letter_log_line_carries_no_payload_and_any_field_name(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(r, {})
    huge = "y" * 100_000
    raw_fields = {"msg": "a", "args": "b", "name": "c", "payload": f'{{"p": "{huge}"}}'}
    add_entry(r, "unknown.task", raw=raw_fields)
    with caplog.at_level(logging.ERROR):
        worker.poll_once()
    [record] = [x for x in caplog.records if x.message == "message dead-lettered"]
    assert len(str(record.__dict__)) < 5000
    assert dead_letters(r)[0]["msg"] == "a"


def test_a_task_that_forks_never_lets_its_child_run_the_loop(r: redis.Redis) -> None:
    def forks() -> int:
        return os.fork()  # the child returns 0 into the worker: it must leave at once

    worker = make_worker(r, {"forks": forks})
    entry_id = add_entry(r, "forks")
    worker.poll_once()
    child = int(result_of(r, entry_id) or 0)
    assert child > 0  # the parent's result: the child's pid, stored once
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [c["name"] for c in r.xinfo_consumers(STREAM, GROUP)] == ["c1"]


def test_a_stop_during_a_long_task_releases_its_batch_mates_at_once(
    r: redis.Redis,
) -> None:
    release_task = threading.Event()

    def long(n: int) -> int:
        if n == 0:
            release_task.wait(10)
        return n

    worker = make_worker(r, {"long": long}, claim_idle_ms=3000, batch_size=3)
    ids = [add_entry(r, "long", {"n": n}) for n in range(3)]
    thread = running(worker)
    try:
        eventually(lambda: len(pending(r)) == 3)
        worker.stopping.set()  # SIGTERM, while the first task of the batch runs
        # Pending list: ids[1:] handed back (their delivery uncounted, claimable now);
        # ids[0] still c1's, running.
        eventually(lambda: [p["times_delivered"] for p in pending(r)] == [1, 0, 0])
        assert all(p["time_since_delivered"] >= 3000 for p in pending(r)[1:])
    finally:
        release_task.set()
        thread.join(timeout=5)
    assert [p["message_id"] for p in pending(r)] == ids[1:]


def test_result_and_ack_go_together_or_not_at_all(own: redis.Redis) -> None:
    """A failure inside the MULTI (here: Redis refuses the HSET at maxmemory) applies
    none of it: no result without its ack, no ack without its result."""
    worker = make_worker(own, ECHO)
    entry_id = add_entry(own, "echo", {"x": 1})
    [message] = worker.reader.read_new()
    own.config_set("maxmemory", 1)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        store_and_ack(own, worker.settings, [(message, "1")])
    own.config_set("maxmemory", 0)
    # Pending list: the entry, still c1's; and no result was stored.
    assert [p["message_id"] for p in pending(own)] == [entry_id]
    assert result_of(own, entry_id) is None
