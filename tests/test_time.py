"""Time, end to end: retries with backoff, delayed tasks, expiry, periodic tasks and
hard timeouts, with real consumer processes (python -m consumer) on a real Redis. The
tasks (tests/time_tasks.py) record their own clock; the test reads what they wrote."""

import itertools
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from harness.processes import Service
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.task_ref import TaskRef
from pipeline_core.timing import make_timing
from tests.conftest import eventually
from tests.factories import FAST_CONSUMER, GROUP, STREAM, dead_letters, drained, pending

pytestmark = pytest.mark.timeout(120)

FAST = {**FAST_CONSUMER, "TASK_MODULES": "tests.time_tasks"}
# What a loaded 2-core machine may add to a promise of "within a second".
MARGIN_S = 2.0

StartConsumer = Callable[..., Service]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    directory = tmp_path / "records"
    directory.mkdir()
    return directory


@pytest.fixture
def start_consumer(
    redis_url: str, tmp_path: Path, records: Path, r: redis.Redis
) -> Iterator[StartConsumer]:
    started: list[Service] = []

    def start(name: str, **env: str) -> Service:
        settings = {**FAST, "REDIS_URL": redis_url, "CONSUMER_NAME": name,
                    "TIME_TASKS_DIR": str(records), **env}  # fmt: skip
        service = Service("consumer", settings, tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def sender(r: redis.Redis) -> Sender:
    r.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    return Sender(SenderSettings(), client=r)


def lines(records: Path, name: str) -> list[str]:
    path = records / name
    return path.read_text().splitlines() if path.exists() else []


def times(records: Path, name: str) -> list[float]:
    return [float(line.split()[-1]) for line in lines(records, name)]


def state_of(ref: TaskRef) -> str:
    return str(ref.status()["state"])


def test_a_failing_task_is_retried_with_exponential_backoff_under_its_id(
    start_consumer: StartConsumer, sender: Sender, records: Path
) -> None:
    start_consumer("c1")
    ref = sender.send("flaky", {"key": "flaky", "failures": 3})
    eventually(lambda: state_of(ref) == "succeeded", timeout_s=30)
    assert ref.result(timeout_s=5) == 4  # the fourth attempt, under the task's first ID
    started = times(records, "flaky")
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    # backoff_s 0.5, doubling, capped at 1.5 (+-10 % jitter); promoted within 1 s.
    for gap, wait in zip(gaps, (0.5, 1.0, 1.5), strict=True):
        assert 0.9 * wait <= gap <= 1.1 * wait + 1 + MARGIN_S, (gaps, wait)


def test_exhausted_retries_dead_letter_with_the_last_error_and_attempts(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    start_consumer("c1")
    ref = sender.send("flaky", {"key": "doomed", "failures": 99})
    eventually(lambda: state_of(ref) == "dead", timeout_s=30)
    [letter] = dead_letters(r)
    assert letter["error"] == "RuntimeError: attempt 4 fails"
    assert (letter["deliveries"], letter["id"]) == ("4", ref.id)
    assert ref.status()["attempts"] == 4 and len(lines(records, "doomed")) == 4


def test_retry_on_and_unrecoverable_errors_dead_letter_at_once(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    start_consumer("c1")
    picky = sender.send("picky", {"key": "picky"})
    hopeless = sender.send("hopeless", {"key": "hopeless"})
    eventually(lambda: len(dead_letters(r)) == 2, timeout_s=20)
    errors = {d["id"]: (d["error"], d["deliveries"]) for d in dead_letters(r)}
    assert errors == {
        picky.id: ("ValueError: not a KeyError: never retried", "1"),
        hopeless.id: ("UnrecoverableError: the file is gone for good", "1"),
    }
    assert lines(records, "picky") == lines(records, "hopeless") == ["ran"]


def test_a_retry_waiting_past_claim_idle_holds_no_pending_entry(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    start_consumer("c1")
    ref = sender.send("patient", {"key": "patient"})
    eventually(lambda: state_of(ref) == "retrying", timeout_s=20)
    waiting = ref.status()
    assert waiting["id"] == ref.id and waiting["next_attempt_at"]
    assert waiting["attempts"] == 1 and "first attempt fails" in waiting["error"]
    # Waiting 4 s, past CLAIM_IDLE_MS (0.5 s): nobody holds it, nothing reclaims it.
    assert pending(r) == [] and r.zcard("{tasks}:delayed") == 1
    time.sleep(1.5)  # three CLAIM_IDLE_MS: a pending entry would have been reclaimed
    assert state_of(ref) == "retrying" and len(lines(records, "patient")) == 1
    eventually(lambda: state_of(ref) == "succeeded", timeout_s=20)
    assert ref.result(timeout_s=5) == 2
    first, second = times(records, "patient")
    assert 0.9 * 4 <= second - first <= 4.4 + 1 + MARGIN_S


def test_a_delayed_task_starts_in_its_window(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    consumer = start_consumer("c1")
    eventually(lambda: "consumer started" in consumer.log_text(), timeout_s=20)
    due_s = time.time() + 2
    ref = sender.send("stamp", {"key": "later"}, timing=make_timing(run_at=due_s))
    assert state_of(ref) == "delayed" and ref.status()["due_at"]
    eventually(lambda: state_of(ref) == "succeeded", timeout_s=20)
    [started] = times(records, "later")
    # Not before it is due (Redis's clock and ours are this machine's), promptly after.
    assert due_s - 0.01 <= started <= due_s + 1 + MARGIN_S


def test_a_task_not_started_within_expires_s_never_runs(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    timing = make_timing(expires_s=0.5)
    stale = sender.send("stamp", {"key": "stale"}, timing=timing)
    fresh = sender.send("stamp", {"key": "fresh"}, timing=make_timing(expires_s=600))
    time.sleep(1.0)  # no consumer yet: the first expires unstarted
    start_consumer("c1")
    eventually(lambda: state_of(fresh) == "succeeded", timeout_s=20)
    eventually(lambda: state_of(stale) == "expired", timeout_s=20)
    assert lines(records, "stale") == [] and len(lines(records, "fresh")) == 1


def test_three_consumers_promote_a_thousand_tasks_due_at_once_exactly_once(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    for name in ("c1", "c2", "c3"):
        start_consumer(name)
    due_s = time.time() + 3
    timing = make_timing(run_at=due_s)
    refs = sender.send_many(
        "stamp", [{"key": f"k{n % 10}"} for n in range(1000)], timing=timing
    )
    assert len({ref.id for ref in refs}) == 1000 and r.zcard("{tasks}:delayed") == 1000
    eventually(lambda: r.zcard("{tasks}:delayed") == 0, timeout_s=30)
    eventually(lambda: drained(r, 1000), timeout_s=60)
    runs = [line for n in range(10) for line in lines(records, f"k{n}")]
    assert len(runs) == 1000  # each ran once: none lost, none twice
    assert min(float(line.split()[1]) for line in runs) >= due_s - 0.01
    info = r.xinfo_stream(STREAM)
    assert info["entries-added"] == 1000  # each promoted once


def ticks_enqueued(consumers: list[Service]) -> list[int]:
    """The ticks the consumers' logs say they enqueued (the tick each was for)."""
    found = []
    for consumer in consumers:
        for line in consumer.log_text().splitlines():
            record = json.loads(line)
            if record.get("message") == "periodic task enqueued":
                found.append(int(record["tick_ms"]))
    return sorted(found)


def test_periodic_ticks_run_once_across_consumers_and_catch_up_once(
    start_consumer: StartConsumer, records: Path, r: redis.Redis
) -> None:
    modules = {"TASK_MODULES": "tests.time_tasks,tests.periodic_tasks"}
    consumers = [start_consumer(name, **modules) for name in ("c1", "c2", "c3")]
    eventually(lambda: len(lines(records, "every_second")) >= 10, timeout_s=40)
    for consumer in consumers:
        consumer.signal(signal.SIGKILL)
        consumer.wait(10)
    ran = len(lines(records, "every_second"))
    ticks = ticks_enqueued(consumers)
    # Each tick enqueued by one consumer only, none skipped while they ran.
    assert len(ticks) == len(set(ticks)) >= 10
    assert all(b - a == 1000 for a, b in itertools.pairwise(ticks)), ticks
    # Each tick ran once (a kill may land between a tick's enqueue and its run).
    assert ran in (len(ticks), len(ticks) - 1)
    time.sleep(3.5)  # three ticks missed while no consumer runs
    restarted = start_consumer("c4", **modules)
    eventually(lambda: len(ticks_enqueued([restarted])) >= 2, timeout_s=30)
    catch_up, following = ticks_enqueued([restarted])[:2]
    # One run for the ticks missed (the first of them), then the schedule again.
    assert catch_up == ticks[-1] + 1000
    assert following - catch_up >= 3000 and following % 1000 == 0


def test_a_pure_python_task_past_its_timeout_is_stopped_and_retried(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    consumer = start_consumer("c1")
    ref = sender.send("spin", {"key": "spin"})
    regex = sender.send("backtrack", {"key": "backtrack"})  # no retry: max_retries=0
    after = sender.send("stamp", {"key": "after"})
    eventually(lambda: state_of(ref) == state_of(regex) == "dead", timeout_s=30)
    letters = {d["id"]: d for d in dead_letters(r)}
    assert letters[regex.id]["error"].startswith("TimeoutError: task ran past")
    letter = letters[ref.id]
    assert letter["error"].startswith("TimeoutError: task ran past its timeout of 1 s")
    assert letter["deliveries"] == "2"
    first, second = times(records, "spin")
    assert second - first <= 1 + 1 + 0.11 + 1 + MARGIN_S  # T + 1 s, then its backoff
    eventually(lambda: state_of(after) == "succeeded", timeout_s=20)
    assert consumer.alive()  # the same worker carried on


def test_a_task_holding_the_gil_past_its_timeout_ends_its_worker_and_is_reclaimed(
    start_consumer: StartConsumer, sender: Sender, records: Path, r: redis.Redis
) -> None:
    first = start_consumer("c1")
    ref = sender.send("hog", {"key": "hog"})
    eventually(lambda: lines(records, "hog"), timeout_s=20)
    # The keeper kills it at timeout_s + KILL_GRACE_S (1 + 5 s); non-zero, and why.
    assert first.wait(30) != 0
    assert "task held the worker past its timeout" in first.log_text()
    assert [row["message_id"] for row in pending(r)] == [ref.id]  # nothing lost
    start_consumer("c2")  # its supervisor's restart: reclaims, out of attempts
    eventually(lambda: state_of(ref) == "dead", timeout_s=30)
    [letter] = dead_letters(r)
    assert letter["id"] == ref.id and len(lines(records, "hog")) == 1
