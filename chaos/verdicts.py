"""What each scenario must show beyond "nothing lost": bounded duplicates, honest 503s,
backpressure, healthy work flowing past poison, a broken control's bounded loss."""

import itertools
import re
from collections import Counter

from chaos.checker import extra_runs, healthy, read_runs, run_times
from chaos.runner import Run
from chaos.stack import CLAIM_IDLE_MS, CONSUMER_ENV
from pipeline_core import task_state
from pipeline_core.partitions import locate

CLAIM_IDLE_S = CLAIM_IDLE_MS / 1000
MAX_BACKLOG = 1000
# A delayed task's ID (pipeline_core/delayed.py): <ms>-1<18 digits>, never an entry's.
DELAYED_ID = re.compile(r"[0-9]+-1[0-9]{18}")


def duplicates_within_what_faults_held(run: Run) -> None:
    """A healthy task runs again (beyond a retried task's expected attempts) only if a
    fault caught its consumer holding it, and at most once per such fault; by task
    ID, which a delayed or retried task keeps as its entry IDs change."""
    runs = read_runs(run.record_dir)
    extra = _extra_runs(run, runs)
    unattributed = {
        task_id: n
        for task_id, n in extra.items()
        if n > sum(task_id in held for held in run.held)
    }
    run.report.notes["held by faulted consumers"] = sum(len(h) for h in run.held)
    if unattributed:
        run.problem(f"{len(unattributed)} tasks ran again without a fault holding "
                    f"them, e.g. {sorted(unattributed)[:3]}")  # fmt: skip
    if run.report.duplicates > sum(extra.values()):
        run.problem("an entry of an unknown outcome (5xx, timeout) ran twice")


def delayed_and_retried_within_faults(run: Run) -> None:
    """sigkill's rule by task ID, for delayed and retried tasks too; every accepted
    task's state, read by its task ID, is `succeeded`; and the load did have delayed
    tasks and retries (how many a kill caught held is noted)."""
    duplicates_within_what_faults_held(run)
    acked = run.ledger.acknowledged
    delayed = {task_id for task_id in acked.values() if DELAYED_ID.fullmatch(task_id)}
    retried = {task_id for token, task_id in acked.items() if token.startswith("r")}
    if not delayed or not retried:
        run.problem(f"{len(delayed)} delayed and {len(retried)} retried tasks accepted")
    held = set().union(*run.held)
    run.report.notes |= {"delayed tasks": len(delayed), "retried tasks": len(retried),
                         "held delayed": len(held & delayed),
                         "held retried": len(held & retried)}  # fmt: skip
    states = {task_id: _state(run, task_id) for task_id in acked.values()}
    unfinished = sorted(t for t, state in states.items() if state != "succeeded")
    if unfinished:
        examples = [(t, states[t]) for t in unfinished[:3]]
        run.problem(f"{len(unfinished)} accepted tasks not succeeded, e.g. {examples}")


def _state(run: Run, task_id: str) -> str:
    """A task's state, read in its partition (a task ID names it: p<i>-<entry ID>)."""
    _, part, entry_id = locate(run.queue, task_id)
    found = task_state.status(run.client, part, entry_id)
    return "unknown" if found is None else found.state


def no_duplicates(run: Run) -> None:
    if run.report.duplicates:
        run.problem(f"{run.report.duplicates} duplicates where none may happen")


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
    duplicates_within_what_faults_held(run)


def healthy_work_flows_past_poison(run: Run) -> None:
    healthy_runs = run_times(run.record_dir, "w")
    gap = max((b - a for a, b in itertools.pairwise(healthy_runs)), default=0.0)
    run.report.notes["longest pause of healthy work s"] = round(gap, 2)
    if gap > CLAIM_IDLE_S * 2:
        run.problem(f"healthy work stopped for {gap:.1f} s")
    duplicates_within_what_faults_held(run)


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
    no_duplicates(run)


def loss_within_acked_batches(run: Run) -> None:
    """The ack-before-processing control loses at most the batch each kill caught."""
    bound = len(run.held) * int(CONSUMER_ENV["BATCH_SIZE"])
    run.report.notes["loss bound"] = bound
    if run.report.lost > bound:
        run.report.violations.append(f"lost {run.report.lost}, over the bound {bound}")


def _extra_runs(run: Run, runs: Counter[str]) -> dict[str, int]:
    """Task ID -> extra runs, for accepted healthy tasks that ran more than expected."""
    return {
        task_id: extra_runs(token, runs)
        for token, task_id in run.ledger.acknowledged.items()
        if healthy(token) and extra_runs(token, runs) > 0
    }
