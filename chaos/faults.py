"""Fault injection helpers: find the consumer to hit (one caught holding entries), hit
it, and time the recovery. Each fault notes the tasks its victim held (run.held), by
task ID: a delayed or retried task's entry IDs change, its task ID stays."""

import signal
import time

from chaos.runner import Run
from pipeline_core.partitions import locate, parts, task_id
from pipeline_core.wire import TASK_ID_FIELD


def pending_of(run: Run, consumer: str | None = None) -> set[str]:
    """IDs pending in the group (of one consumer, if named); on a partitioned queue
    each names its partition (`p<i>-<entry ID>`)."""
    found = set()
    for index, part in enumerate(parts(run.queue)):
        rows = run.client.xpending_range(
            part.stream, part.group, "-", "+", 10_000, consumer
        )
        found |= {
            task_id(run.queue, index, row["message_id"])
            for row in rows
            if isinstance(row["message_id"], str)
        }
    return found


def note_held(run: Run, entry_ids: set[str]) -> None:
    """Note a fault's victim held these pending entries, by their tasks' IDs."""
    run.held.append(task_ids_of(run, entry_ids))


def task_ids_of(run: Run, entry_ids: set[str]) -> set[str]:
    """The task IDs of entries (one XRANGE each, in one round trip): a promoted delayed
    task's or a retry's entry names its task (`id`); any other entry is its task. An
    entry gone (acked and trimmed since) is named by its entry ID."""
    located = [locate(run.queue, given) for given in sorted(entry_ids)]
    with run.client.pipeline(transaction=False) as pipe:
        for _, part, entry_id in located:
            pipe.xrange(part.stream, entry_id, entry_id)
        replies = pipe.execute()
    return {
        task_id(run.queue, index, reply[0][1].get(TASK_ID_FIELD, entry_id))
        if reply
        else task_id(run.queue, index, entry_id)
        for (index, _, entry_id), reply in zip(located, replies, strict=True)
    }


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


def kill_consumers(
    run: Run, kills: int, every_s: float, recovery_s: float = 15.0
) -> None:
    """SIGKILL the busiest consumer, `kills` times; the supervisor restarts it. Notes
    per kill: entries it held, and seconds until others had finished them (waiting
    `recovery_s` at most)."""
    per_kill: list[tuple[int, float | None]] = []
    for _ in range(kills):
        run.wait(every_s)
        victim = busiest(run)
        run.stack.consumers[victim].signal(signal.SIGKILL)
        held = pending_of(run, victim)  # read after the kill: nothing can change it now
        note_held(run, held)
        recovery = recovered(run, held, timeout_s=recovery_s)
        per_kill.append((len(held), None if recovery is None else round(recovery, 2)))
        if recovery is None:
            lapse = f"{recovery_s:g} s"
            run.problem(f"entries held by killed {victim} not recovered in {lapse}")
    run.report.recovery_s = max((r for _, r in per_kill if r is not None), default=None)
    run.report.notes["kills (held, recovery s)"] = per_kill


def pause_a_holder(run: Run) -> tuple[str, set[str]]:
    """SIGSTOP a consumer caught holding entries (read after the stop, so they are the
    ones it really holds); a consumer caught between batches is let go and retried."""
    for _ in range(50):
        victim = busiest(run)
        service = run.stack.consumers[victim]
        service.signal(signal.SIGSTOP)
        held = pending_of(run, victim)
        if held:
            note_held(run, held)
            return victim, held
        service.signal(signal.SIGCONT)
        run.wait(0.02)
    return victim, set()


def first_202_after(run: Run, moment: float) -> float | None:
    """Seconds from `moment` (monotonic) to the end of the first 202 after it."""
    with run.load.ledger.lock:
        ends = [a.ended_s for a in run.load.ledger.answers if a.status == "202"]
    later = [end - moment for end in ends if end > moment]
    return round(min(later), 3) if later else None


def late_acks(run: Run, consumer: str) -> int:
    """Entries the consumer acknowledged after another had taken them over (its log)."""
    return sum(
        line.count('"entry_ids"')
        for line in run.stack.log_text(consumer).splitlines()
        if "late acks" in line
    )
