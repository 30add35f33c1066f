"""`make soak` (`python -m chaos.soak [--minutes 20]`): a long mixed run. Healthy work,
poison and crash-prone entries under steady load, while a fault is injected every
FAULT_EVERY_S in turn (a consumer killed, one frozen, Redis stalled, Redis full, another
producer's undecodable entries and an ID from the near future). Every minute it prints
the RSS of each process and Redis's memory; at the end, lost / unexpected / duplicates.

Passes when nothing is lost, nothing unexpected ran, and memory is flat: no process
grew by more than GROWTH_LIMIT from its first minute to its last, and Redis, drained,
holds no more than it did at the start (plus what results and dead letters keep)."""

import argparse
import itertools
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from chaos import redis_faults, verdicts
from chaos.checker import Report, check, read_dead_letters, read_runs
from chaos.faults import busiest, note_held, pending_of
from chaos.load import Load
from chaos.network import Network
from chaos.runner import Run, Scenario, _settle, _wait_drained, own_redis
from chaos.scenarios import poison_mix
from chaos.stack import DEAD, chaos_stack
from harness.processes import wait_for

FAULT_EVERY_S = 30.0
GROWTH_LIMIT = 1.5  # a process may end at most this much bigger than after warm-up


def kill_one(run: Run) -> None:
    victim = busiest(run)
    run.stack.consumers[victim].signal(signal.SIGKILL)
    note_held(run, pending_of(run, victim))


def freeze_one(run: Run) -> None:
    victim = busiest(run)
    service = run.stack.consumers[victim]
    service.signal(signal.SIGSTOP)
    note_held(run, pending_of(run, victim))
    run.wait(verdicts.CLAIM_IDLE_S * 2.5)
    service.signal(signal.SIGCONT)


def stall_redis(run: Run) -> None:
    run.server.pause()
    run.wait(3.0)
    run.server.resume()


def near_future_id(run: Run) -> None:
    """IDs pinned for 20 s, then the clock catches up."""
    future = f"{int(time.time() * 1000) + 20_000}-0"
    run.client.xadd("tasks", {"task": "chaos.work", "payload": '{"token": "x"}'},
                    id=future)  # fmt: skip


FAULTS: list[Callable[[Run], None]] = [
    kill_one, freeze_one, stall_redis, redis_faults.redis_full,
    redis_faults.undecodable_entries, near_future_id,
]  # fmt: skip


def sample(run: Run, minute: int) -> dict[str, float]:
    """MiB of every process of the stack (by role) and of Redis's used_memory."""
    sizes: dict[str, float] = {}
    for process in run.stack.processes():
        try:
            tree = [
                psutil.Process(process.pid),
                *psutil.Process(process.pid).children(),
            ]
            for each in tree:
                name = " ".join(each.cmdline()[-2:])
                sizes[f"{name}:{each.pid}"] = each.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    sizes["redis used_memory"] = int(run.client.info("memory")["used_memory"]) / 2**20
    shown = ", ".join(f"{name} {mib:.1f}" for name, mib in sorted(sizes.items()))
    print(f"minute {minute:>3}: {shown}", flush=True)
    return sizes


def soak(workdir: Path, minutes: float) -> Report:
    scenario = Scenario("soak", lambda run: None, mix=poison_mix, rate_per_s=100)
    stack, network = chaos_stack(workdir, scenario), Network("")
    report = Report("soak")
    try:
        stack.start()
        network.start_consumers(stack, 3)
        wait_for(stack.consumers_connected, timeout_s=30)
        load = Load(stack.base_url, scenario.rate_per_s, scenario.mix)
        server = own_redis(stack)
        with server.client() as client:
            run = Run(stack, server, load, client, report, False, network)
            _soak(run, scenario, minutes)
    finally:
        stack.stop()
    return report


def _soak(run: Run, scenario: Scenario, minutes: float) -> None:
    run.load.start()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    ends, faults = time.monotonic() + minutes * 60, itertools.cycle(FAULTS)
    next_sample, minute = time.monotonic() + 60, 1
    try:
        while time.monotonic() < ends:
            run.wait(FAULT_EVERY_S)
            fault = next(faults)
            print(f"fault: {fault.__name__}", flush=True)
            fault(run)
            if time.monotonic() >= next_sample:
                last = sample(run, minute)
                first = first or last
                next_sample, minute = next_sample + 60, minute + 1
    finally:
        run.ledger = run.load.stop()
    run.report.drained = _wait_drained(run.client, run.queue, 300)
    _settle(run)
    runs, dead = read_runs(run.record_dir), read_dead_letters(run.client, DEAD)
    check(run.report, run.ledger, runs, dead, scenario.max_deliveries)
    _flat(run.report, first, sample(run, minute))


def _flat(report: Report, first: dict[str, float], last: dict[str, float]) -> None:
    for name, mib in last.items():
        start = first.get(name)
        if name == "redis used_memory":
            continue  # drained: checked below against the start
        if start is not None and mib > start * GROWTH_LIMIT + 5:
            report.problems.append(f"{name} grew from {start:.1f} to {mib:.1f} MiB")
    redis_start, redis_end = first.get("redis used_memory"), last["redis used_memory"]
    report.notes["redis MiB first minute / drained"] = (redis_start, redis_end)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        report = soak(Path(workdir), args.minutes)
    print(report)
    passed = report.passed and not report.lost and not report.unexpected
    print("soak: pass" if passed else "soak: FAIL", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
