"""The fault scenarios and the broken controls. Each injects its faults while the load
runs (`inject`) and adds its own checks after the drain (`verify`)."""

import itertools
import signal
import threading
import time

from chaos.checker import read_dead_letters, read_runs, run_times
from chaos.load import Mix, steady
from chaos.runner import Run, Scenario
from chaos.stack import CLAIM_IDLE_MS, DEAD, GROUP, STREAM
from harness.processes import wait_for

CLAIM_IDLE_S = CLAIM_IDLE_MS / 1000
MAX_DELIVERIES = 3
GRACE_S = 10.0  # the terminationGracePeriodSeconds a rollout would give
MAX_BACKLOG = 1000


def pending_of(run: Run, consumer: str | None = None) -> set[str]:
    """IDs pending in the group (of one consumer, if named)."""
    rows = run.client.xpending_range(STREAM, GROUP, "-", "+", 10_000, consumer)
    return {row["message_id"] for row in rows if isinstance(row["message_id"], str)}


def busiest(run: Run) -> str:
    """The live consumer holding the most entries. Waits (up to 2 s) for one to hold
    some, so that a fault hits a consumer mid-batch rather than an idle one."""
    deadline = time.monotonic() + 2.0
    while True:
        live = sorted(run.stack.live_consumers())
        holding = {name: len(pending_of(run, name)) for name in live}
        victim = max(live, key=lambda name: holding[name])
        if holding[victim] or time.monotonic() > deadline:
            return victim
        time.sleep(0.002)


def recovered(run: Run, held: set[str], timeout_s: float) -> float | None:
    """Seconds until none of `held` is pending any more (finished by someone)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not held & pending_of(run):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def kill_consumers(run: Run, kills: int, every_s: float) -> None:
    """SIGKILL the busiest consumer, `kills` times; the supervisor restarts it. Notes
    per kill: entries it held, and seconds until others had finished them."""
    per_kill: list[tuple[int, float | None]] = []
    for _ in range(kills):
        run.wait(every_s)
        victim = busiest(run)
        run.stack.consumers[victim].signal(signal.SIGKILL)
        held = pending_of(run, victim)  # read after the kill: nothing can change it now
        recovery = recovered(run, held, timeout_s=15)
        per_kill.append((len(held), None if recovery is None else round(recovery, 2)))
        if recovery is None:
            run.problem(f"entries held by killed {victim} were not recovered in 15 s")
    run.report.recovery_s = max((r for _, r in per_kill if r is not None), default=None)
    run.report.notes["kills (held, recovery s)"] = per_kill
    run.report.notes["held_by_killed"] = sum(held for held, _ in per_kill)


def sigkill(run: Run) -> None:
    kill_consumers(run, kills=3 if run.quick else 10, every_s=1.0 if run.quick else 1.5)


def duplicates_bounded_by_what_kills_held(run: Run) -> None:
    held = run.report.notes.get("held_by_killed", 0)
    if isinstance(held, int) and run.report.duplicates > held:
        run.problem(f"{run.report.duplicates} duplicates, more than the {held} held")


def sigstop(run: Run) -> None:
    run.wait(1.0)
    victim, held = _pause_a_holder(run)
    service = run.stack.consumers[victim]
    if not held:
        run.problem(f"{victim} held nothing when paused: the takeover was not tested")
    takeover = recovered(run, held, timeout_s=CLAIM_IDLE_S * 5)
    run.wait(max(0.0, CLAIM_IDLE_S * 2.5 - (takeover or 0)))
    service.signal(signal.SIGCONT)
    run.wait(1.5 if run.quick else 5.0)
    run.report.recovery_s = takeover
    run.report.notes |= {"paused": victim, "held_when_paused": len(held)}
    if takeover is None:
        run.problem(f"the entries of paused {victim} were not taken over")
    run.report.notes["late_acks"] = sum(
        line.count('"entry_ids"')
        for line in run.stack.log_text(victim).splitlines()
        if "late acks" in line
    )


def _pause_a_holder(run: Run) -> tuple[str, set[str]]:
    """SIGSTOP a consumer caught holding entries (read after the stop, so they are the
    ones it really holds); a consumer caught between batches is let go and retried."""
    for _ in range(50):
        victim = busiest(run)
        service = run.stack.consumers[victim]
        service.signal(signal.SIGSTOP)
        held = pending_of(run, victim)
        if held:
            return victim, held
        service.signal(signal.SIGCONT)
        run.wait(0.02)
    return victim, set()


def rolling_restart(run: Run) -> None:
    """As a Deployment rollout: start a successor, then SIGTERM the old consumer."""
    exits: dict[str, tuple[int, float]] = {}
    for generation in range(1, 2 if run.quick else 4):
        for name in sorted(run.stack.live_consumers()):
            run.stack.start_consumer(f"{name.split('-')[0]}-v{generation}")
            wait_for(run.stack.consumers_connected, timeout_s=30)  # it is ready
            run.wait(0.7)
            service = run.stack.retire(name)
            started = time.monotonic()
            service.signal(signal.SIGTERM)
            code = service.wait(GRACE_S * 2)
            exits[name] = (code, round(time.monotonic() - started, 2))
            if code != 0 or exits[name][1] > GRACE_S:
                run.problem(f"{name} exited {code} after {exits[name][1]} s")
    run.wait(1.0)
    run.report.notes["exits (code, s)"] = exits


def no_duplicates(run: Run) -> None:
    if run.report.duplicates:
        run.problem(f"{run.report.duplicates} duplicates where none may happen")


def redis_kill(run: Run) -> None:
    run.wait(1.0)
    killed = time.monotonic()
    run.server.kill()
    run.wait(2.0 if run.quick else 5.0)
    restarted = time.monotonic()
    run.server.start()
    run.wait(2.0 if run.quick else 5.0)
    run.report.notes["outage"] = (killed, restarted)
    run.report.recovery_s = _first_202_after(run, restarted)


def _first_202_after(run: Run, moment: float) -> float | None:
    with run.load.ledger.lock:
        ends = [a.ended_s for a in run.load.ledger.answers if a.status == "202"]
    later = [end - moment for end in ends if end > moment]
    return round(min(later), 3) if later else None


def answered_503_while_down(run: Run) -> None:
    outage = run.report.notes["outage"]
    if not isinstance(outage, tuple):
        raise TypeError(f"redis_kill noted no outage: {outage!r}")
    down, up = outage
    inside = [a for a in run.ledger.answers if a.started_s > down and a.ended_s < up]
    false_202 = [a for a in inside if a.status == "202"]
    if false_202:
        run.problem(f"{len(false_202)} answers were 202 while Redis was down")
    if not any(a.status == "503" for a in inside):
        run.problem("the dispatcher never answered 503 while Redis was down")
    if run.stack.restarts:
        run.problem(f"consumers died with Redis ({run.stack.restarts} restarts)")


def redis_stall(run: Run) -> None:
    run.wait(1.0)
    run.server.pause()
    run.wait(3.0 if run.quick else 4.0)  # under the dispatcher's 5 s socket timeout
    resumed = time.monotonic()
    run.server.resume()
    run.wait(2.0 if run.quick else 5.0)
    run.report.recovery_s = _first_202_after(run, resumed)


def poison_mix(number: int) -> tuple[str, int, float]:
    if number % 20 == 7:
        return "chaos.poison", 1, 0.0
    if number % 40 == 13:
        return "chaos.crash", 1, 0.0
    return "chaos.work", 10, 0.005


def poison(run: Run) -> None:
    run.wait(4.0 if run.quick else 15.0)


def each_poison_dead_once(run: Run) -> None:
    doomed = [t for t in run.ledger.acknowledged if t[0] in "pc"]  # poison, crash
    letters = read_dead_letters(run.client, DEAD)
    attempts = read_runs(run.record_dir)
    run.report.notes["poison_and_crash"] = len(doomed)
    for token in doomed:
        if len(letters.get(token, [])) != 1:
            run.problem(f"{token} dead-lettered {len(letters.get(token, []))} times")
        if attempts[token] > MAX_DELIVERIES:
            run.problem(f"{token} ran {attempts[token]} times, over {MAX_DELIVERIES}")
    healthy_dead = [t for t in letters if t.startswith("w")]
    if healthy_dead:
        run.problem(f"healthy entries dead-lettered: {healthy_dead[:3]}")
    healthy = run_times(run.record_dir, "w")
    gap = max((b - a for a, b in itertools.pairwise(healthy)), default=0.0)
    run.report.notes["longest pause of healthy work s"] = round(gap, 2)
    if gap > CLAIM_IDLE_S * 2:
        run.problem(f"healthy work stopped for {gap:.1f} s")


def burst(run: Run) -> None:
    run.wait(3.0 if run.quick else 10.0)


def backpressure_held(run: Run) -> None:
    statuses = run.ledger.statuses()
    if not statuses.get("429"):
        run.problem("the burst never met backpressure (no 429)")
    no_hint = [
        a
        for a in run.ledger.answers
        if a.status in ("429", "503") and not a.retry_after
    ]
    if no_hint:
        run.problem(f"{len(no_hint)} refusals without Retry-After")
    bound = MAX_BACKLOG + 1000  # trimming runs every 200 ms, requests race the check
    if run.report.peak_xlen > bound:
        run.problem(f"XLEN peaked at {run.report.peak_xlen}, over {bound}")


def long_tasks(run: Run) -> None:
    run.wait(1.5)
    victim = busiest(run)
    held = pending_of(run, victim)
    run.wait(1.0)  # its task (2.5 s) is under way, past claim_idle_ms
    run.stack.consumers[victim].signal(signal.SIGKILL)
    run.report.recovery_s = recovered(run, held, timeout_s=15)
    run.wait(2.0 if run.quick else 8.0)


def naive_trim(run: Run) -> None:
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(0.1):
            run.client.xtrim(STREAM, maxlen=50, approximate=False)

    trimmer = threading.Thread(target=trim, daemon=True)
    trimmer.start()
    run.wait(3.0 if run.quick else 8.0)
    stop.set()
    trimmer.join()


def ack_first(run: Run) -> None:
    kill_consumers(run, kills=3, every_s=1.0)


LONG: Mix = steady("chaos.work", 1, CLAIM_IDLE_S * 2.5)

SCENARIOS = [
    Scenario("sigkill", sigkill, duplicates_bounded_by_what_kills_held),
    # Tasks of 20 ms: the paused consumer is caught holding a batch, not between two.
    Scenario("sigstop", sigstop, mix=steady("chaos.work", 10, 0.02), rate_per_s=150),
    Scenario("rolling-restart", rolling_restart, no_duplicates),
    Scenario("redis-kill", redis_kill, answered_503_while_down),
    Scenario("redis-stall", redis_stall),
    Scenario("poison", poison, each_poison_dead_once, mix=poison_mix, rate_per_s=150),
    Scenario(
        "burst",
        burst,
        backpressure_held,
        mix=steady("chaos.work", 100, 0.005),
        rate_per_s=4000,
        dispatcher_env={"MAX_BACKLOG": str(MAX_BACKLOG)},
    ),
    Scenario(
        "long-task",
        long_tasks,
        no_duplicates,
        mix=LONG,
        rate_per_s=0.8,
        consumer_env={"BATCH_SIZE": "1"},
    ),
]
CONTROLS = [
    Scenario(
        "control-ack-first", ack_first, consumer_module="chaos.broken", expect_loss=True
    ),
    Scenario(
        "control-maxlen",
        naive_trim,
        mix=steady("chaos.work", 10, 0.02),
        rate_per_s=400,
        expect_loss=True,
        drain_s=20,
    ),
]
