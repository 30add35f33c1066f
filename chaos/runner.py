"""Runs a scenario: start the stack, load it, inject faults, heal, drain, check."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from chaos.checker import Report, check, drained, read_dead_letters, read_runs
from chaos.load import Ledger, Load, Mix, steady
from chaos.sampler import Sampler
from chaos.stack import DEAD, GROUP, STREAM, chaos_stack, record_dir
from harness.processes import wait_for
from harness.redis_server import RedisServer
from harness.stack import Stack

WORK = steady("chaos.work", 10, 0.005)  # 10 entries a request, 5 ms of work each


@dataclass
class Run:
    """What a scenario's fault injection and checks work with."""

    stack: Stack
    server: RedisServer  # the stack's own Redis, to kill and pause
    load: Load
    client: redis.Redis
    report: Report
    quick: bool
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def record_dir(self) -> Path:
        return record_dir(self.stack.workdir)

    def wait(self, seconds: float) -> None:
        """Let the load run on for a while (the one sleep: it is the workload)."""
        time.sleep(seconds)

    def problem(self, text: str) -> None:
        self.report.problems.append(text)


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Run], None]
    verify: Callable[[Run], None] = lambda run: None
    mix: Mix = WORK
    rate_per_s: float = 200.0
    consumers: int = 2
    consumer_env: dict[str, str] = field(default_factory=dict)
    dispatcher_env: dict[str, str] = field(default_factory=dict)
    consumer_module: str = "consumer"
    expect_loss: bool = False  # a broken control: the checker must find loss
    drain_s: float = 60.0


def run_scenario(scenario: Scenario, workdir: Path, quick: bool) -> Report:
    stack = chaos_stack(
        workdir,
        scenario.consumers,
        scenario.consumer_env,
        scenario.dispatcher_env,
        scenario.consumer_module,
    )
    report = Report(scenario.name)
    try:
        stack.start()
        if stack.redis is None:
            raise TypeError("chaos_stack starts a Redis of its own")
        with stack.redis.client() as client:
            _load_and_check(scenario, stack, client, report, quick)
    finally:
        stack.stop()
    return report


def _load_and_check(
    scenario: Scenario, stack: Stack, client: redis.Redis, report: Report, quick: bool
) -> None:
    sampler = Sampler(client, STREAM).start()
    load = Load(stack.base_url, scenario.rate_per_s, scenario.mix).start()
    if stack.redis is None:
        raise TypeError("chaos_stack starts a Redis of its own")
    run = Run(stack, stack.redis, load, client, report, quick)
    try:
        scenario.inject(run)
    finally:
        run.ledger = load.stop()
    report.drained = _wait_drained(client, scenario.drain_s)
    sampler.stop()
    report.peak_xlen, report.peak_memory_bytes = (
        sampler.peak_xlen,
        sampler.peak_memory_bytes,
    )
    check(
        report, run.ledger, read_runs(run.record_dir), read_dead_letters(client, DEAD)
    )
    scenario.verify(run)
    report.notes["statuses"] = dict(run.ledger.statuses())
    report.notes["consumer_restarts"] = stack.restarts


def _wait_drained(client: redis.Redis, timeout_s: float) -> bool:
    def settled() -> bool:
        try:
            return drained(client, STREAM, GROUP)
        except redis.RedisError:
            return False

    try:
        return wait_for(settled, timeout_s, every_s=0.1)
    except TimeoutError:
        return False
