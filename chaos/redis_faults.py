"""Scenarios of round two and three: the network (partition, slow), Redis refusing
writes (full memory, failed persistence), and what other writers and readers of the
stream do (undecodable entries, IDs from the future, another group)."""

import time
from pathlib import Path

import redis

from chaos import verdicts
from chaos.checker import read_dead_letters
from chaos.faults import late_acks, note_held, pending_of, recovered
from chaos.network import PARTITIONED
from chaos.runner import Run
from chaos.stack import DEAD, STREAM
from pipeline_core.group_state import read_group_state
from pipeline_core.keys import Queue

CLAIM_IDLE_S = verdicts.CLAIM_IDLE_S


def partition(run: Run) -> None:
    """Cut the link of the consumer in its own namespace for 2.5 x CLAIM_IDLE_MS, with
    the entries it holds at that moment, then heal it."""
    namespace = run.network.namespace
    if namespace is None:
        raise TypeError("the partition scenario needs its namespace")
    run.wait(1.0)
    deadline = time.monotonic() + 3
    while not pending_of(run, PARTITIONED) and time.monotonic() < deadline:
        run.wait(0.01)
    namespace.cut()
    held = pending_of(run, PARTITIONED)  # it can neither ack nor read now
    note_held(run, held)
    takeover = recovered(run, held, timeout_s=CLAIM_IDLE_S * 5)
    run.wait(max(0.0, CLAIM_IDLE_S * 2.5 - (takeover or 0)))
    healed = time.time()
    namespace.heal()
    run.wait(3.0 if run.quick else 8.0)
    run.report.recovery_s = takeover
    run.report.notes |= {"held when cut": len(held), "healed at": healed}
    if not held or takeover is None:
        run.problem(f"held {len(held)} when cut, taken over: {takeover}")


def rejoined_without_restart(run: Run) -> None:
    service = run.stack.consumers[PARTITIONED]
    run.report.notes["late_acks"] = late_acks(run, PARTITIONED)
    healed = run.report.notes["healed at"]
    after = [
        line for line in _runs_of(run, PARTITIONED) if float(line) > float(str(healed))
    ]
    if run.stack.restarts or not after:
        run.problem(f"{PARTITIONED}: restarts {run.stack.restarts}, "
                    f"{len(after)} runs after the link came back")  # fmt: skip
    if not service.process.returncode and not after:
        run.problem(f"{PARTITIONED} did not work again after the heal")
    verdicts.duplicates_within_what_faults_held(run)


def no_spurious_takeovers(run: Run) -> None:
    """Slow, not broken: heartbeats kept every claim; nothing ran twice."""
    taken = sum(
        run.stack.log_text(n).count("claims taken over") for n in run.stack.consumers
    )
    if taken or run.report.duplicates or run.stack.restarts:
        run.problem(f"{taken} takeovers, {run.report.duplicates} duplicates, "
                    f"{run.stack.restarts} restarts on a slow network")  # fmt: skip
    run.report.notes["processed per s"] = round(run.report.processed / _load_s(run), 1)


def redis_full(run: Run) -> None:
    """maxmemory set under what Redis uses, for a while, then lifted."""
    run.wait(1.0)
    used = int(run.client.info("memory")["used_memory"])
    run.client.config_set("maxmemory", max(1, used - 100_000))
    run.report.notes["full from"] = time.monotonic()
    run.wait(2.0 if run.quick else 6.0)
    run.client.config_set("maxmemory", 0)
    run.report.notes["full until"] = time.monotonic()
    run.wait(2.0 if run.quick else 5.0)


def refused_naming_why(
    run: Run, words: tuple[str, ...], duplicates: bool = False
) -> None:
    refusals = [a for a in run.ledger.answers if a.status in ("503", "507")]
    named = [a for a in refusals if any(w in a.reason for w in words)]
    run.report.notes["refusals (named)"] = (len(refusals), len(named))
    if not named or len(named) < len(refusals) * 0.9:
        run.problem(f"{len(refusals)} refusals, {len(named)} naming {words}")
    if run.stack.restarts:
        run.problem(f"consumers exited {run.stack.restarts} times")
    if duplicates:
        verdicts.duplicates_within_what_faults_held(run)
    else:
        verdicts.no_duplicates(run)


def memory_refusals_named(run: Run) -> None:
    refused_naming_why(run, ("memory",))


def failed_persistence(run: Run) -> None:
    """A snapshot that cannot be written, with stop-writes-on-bgsave-error: Redis
    answers MISCONF to every write (as with a full disk), until a snapshot works."""
    run.wait(1.0)
    blocker = Path(str(run.client.config_get("dir")["dir"])) / "blocked.rdb"
    blocker.mkdir()  # the snapshot's final name is a directory: the rename fails
    run.client.config_set("save", "3600 1")
    run.client.config_set("dbfilename", "blocked.rdb")
    run.client.bgsave()
    persistence = run.client.info("persistence")
    while (
        persistence["rdb_bgsave_in_progress"]
        or persistence["rdb_last_bgsave_status"] == "ok"
    ):
        run.wait(0.01)
        persistence = run.client.info("persistence")
    # Writes are refused now (XREADGROUP and XACK too): what is pending stays as it
    # is, and a batch whose tasks ran but whose ack was refused runs again after.
    note_held(run, pending_of(run))
    run.wait(2.0 if run.quick else 6.0)
    run.client.config_set("dbfilename", "dump.rdb")
    run.client.bgsave()
    run.wait(2.0 if run.quick else 5.0)


def misconf_refusals_named(run: Run) -> None:
    refused_naming_why(run, ("persisting", "MISCONF"), duplicates=True)


def undecodable_entries(run: Run) -> None:
    """Another producer writes entries that are not UTF-8, or lack our fields."""
    raw = redis.Redis(port=run.server.port)  # bytes in, as that producer writes
    written = 0
    deadline = time.monotonic() + (3.0 if run.quick else 10.0)
    while time.monotonic() < deadline:
        raw.xadd(STREAM, {b"task": b"\xff\xfe", b"payload": b"\xc3\x28"})
        raw.xadd(STREAM, {b"garbage": b"\x00\xff"})
        written += 2
        run.wait(0.2)
    raw.close()
    run.report.notes["undecodable written"] = written


def each_undecodable_dead_once(run: Run) -> None:
    dead = _dead_letters_of_foreign(run)
    written = run.report.notes["undecodable written"]
    if dead != written or run.stack.restarts:
        run.problem(f"{written} undecodable written, {dead} dead-lettered, "
                    f"{run.stack.restarts} consumer restarts")  # fmt: skip
    verdicts.no_duplicates(run)


def future_id(run: Run) -> None:
    """Another producer writes an entry dated an hour ahead: every later ID is pinned
    to it. The pipeline must go on, and the state must say so."""
    run.wait(1.0)
    future = f"{int(time.time() * 1000) + 3_600_000}-0"
    run.client.xadd(STREAM, {"task": "chaos.work", "payload": '{"token": "x0"}'},
                    id=future)  # fmt: skip
    run.wait(3.0 if run.quick else 10.0)
    state = read_group_state(run.client, Queue())
    run.report.notes["last ID ahead s"] = round(state.last_id_ahead_s)


def pinned_ids_seen(run: Run) -> None:
    ahead = run.report.notes["last ID ahead s"]
    if not isinstance(ahead, int) or ahead < 3000:
        run.problem(f"the future ID was not seen: {ahead}")
    verdicts.no_duplicates(run)


def second_group(run: Run) -> None:
    """Someone creates another group that reads nothing: trimming keeps everything."""
    run.wait(1.0)
    run.client.xgroup_create(STREAM, "analytics", "$")
    run.wait(3.0 if run.quick else 10.0)
    state = read_group_state(run.client, Queue())
    run.report.notes["other groups"] = [g.name for g in state.other_groups]


def other_group_reported(run: Run) -> None:
    if run.report.notes["other groups"] != ["analytics"]:
        run.problem(f"other groups seen: {run.report.notes['other groups']}")
    verdicts.no_duplicates(run)


def _runs_of(run: Run, consumer: str) -> list[str]:
    return [
        line.split(" ")[2]
        for path in run.record_dir.glob(f"{consumer}-*.runs")
        for line in path.read_text().splitlines()
    ]


def _load_s(run: Run) -> float:
    answers = run.ledger.answers
    return max(0.1, answers[-1].ended_s - answers[0].started_s) if answers else 0.1


def _dead_letters_of_foreign(run: Run) -> int:
    return sum(1 for token in read_dead_letters(run.client, DEAD) if token[:1] == "?")
