"""Runs a scenario: start the stack, load it, inject faults, heal, drain, let the
consumers finish and stop them, then check what the tasks did against what clients
were told."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from chaos.checker import (
    Report,
    check,
    queue_drained,
    read_queue_dead_letters,
    read_runs,
)
from chaos.load import ONCE, Ledger, Load, Mix, Retries, When, right_away, steady
from chaos.network import Network
from chaos.sampler import Sampler
from chaos.stack import CONSUMER_ENV, chaos_queue, chaos_stack, record_dir
from harness.processes import wait_for
from harness.redis_server import SHIPPED, RedisServer
from harness.stack import Stack
from pipeline_core.connection import Client
from pipeline_core.keys import Queue

WORK = steady("chaos.work", 10, 0.005)  # 10 entries a request, 5 ms of work each


@dataclass
class Run:
    """What a scenario's fault injection and checks work with."""

    stack: Stack
    server: RedisServer  # the stack's own Redis, to kill and pause
    load: Load
    client: Client  # on a partitioned queue, the cluster's
    report: Report
    quick: bool
    network: Network
    queue: Queue = field(default_factory=Queue)
    ledger: Ledger = field(default_factory=Ledger)
    # Per fault (a kill, a pause, a partition): the task IDs the faulted consumer held
    # (faults.task_ids_of). A healthy task may run again only as often as faults
    # caught it held.
    held: list[set[str]] = field(default_factory=list)

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
    when: When = right_away  # delayed dispatch: countdown or run_at per request
    rate_per_s: float = 200.0
    consumers: int = 2
    consumer_env: dict[str, str] = field(default_factory=dict)
    dispatcher_env: dict[str, str] = field(default_factory=dict)
    consumer_module: str = "consumer"
    redis_options: tuple[str, ...] = SHIPPED  # what make run and k8s/ ship
    expect_loss: bool = False  # a broken control: the checker must find loss
    drain_s: float = 60.0
    # "partition", "dispatcher-partition" or "slow" (chaos/network.py)
    network: str = ""
    network_delay_s: float = 0.0  # one way, for "slow"
    sentinel: bool = (
        False  # a master, two replicas, three Sentinels (chaos/failover.py)
    )
    retries: Retries = ONCE  # how the load's clients retry (chaos/load.py)
    # Above 1: a queue of that many streams (PARTITIONS) on a local Redis Cluster of 3
    # masters, each with a replica (harness LocalCluster).
    partitions: int = 1

    @property
    def max_deliveries(self) -> int:
        return int({**CONSUMER_ENV, **self.consumer_env}["MAX_DELIVERIES"])


def run_scenario(scenario: Scenario, workdir: Path, quick: bool) -> Report:
    network = Network(scenario.network, scenario.network_delay_s)
    stack = chaos_stack(workdir, scenario, network.redis_options())
    report = Report(scenario.name)
    try:
        network.create()
        stack.start(dispatcher=False)
        network.start_dispatcher(stack)
        network.start_consumers(stack, scenario.consumers)
        wait_for(stack.consumers_connected, timeout_s=30, every_s=0.05)
        server = own_redis(stack)
        load = Load(stack.base_url, scenario.rate_per_s, scenario.mix,
                    when=scenario.when, retries=scenario.retries,
                    headers=network.load_headers())  # fmt: skip
        with _client(stack, server) as client:
            queue = chaos_queue(scenario)
            run = Run(stack, server, load, client, report, quick, network, queue=queue)
            _load_and_check(scenario, run)
    finally:
        stack.stop()
        network.delete()
    return report


def _client(stack: Stack, server: RedisServer) -> Client:
    """The checks' client: on a Sentinel topology it follows the master where it goes;
    on a cluster, the slots."""
    if stack.sentinel:
        return stack.sentinel.client()
    return stack.cluster.client() if stack.cluster else server.client()


def own_redis(stack: Stack) -> RedisServer:
    """The stack's Redis (on a Sentinel topology or a cluster, the first node)."""
    if stack.sentinel:
        return stack.sentinel.nodes[0]
    if stack.cluster:
        return stack.cluster.nodes[0]
    if stack.redis is None:
        raise TypeError("chaos_stack starts a Redis of its own")
    return stack.redis


def _load_and_check(scenario: Scenario, run: Run) -> None:
    sampler = Sampler(run.client, run.queue).start()
    run.load.start()
    try:
        scenario.inject(run)
    finally:
        run.ledger = run.load.stop()
    run.report.drained = _wait_drained(run.client, run.queue, scenario.drain_s)
    _settle(run)
    sampler.stop()
    run.report.peak_xlen = sampler.peak_xlen
    run.report.peak_memory_bytes = sampler.peak_memory_bytes
    runs = read_runs(run.record_dir)
    dead = read_queue_dead_letters(run.client, run.queue)
    check(run.report, run.ledger, runs, dead, scenario.max_deliveries)
    scenario.verify(run)
    run.report.notes["statuses"] = dict(run.ledger.statuses())
    run.report.notes["consumer_restarts"] = run.stack.restarts


def _settle(run: Run) -> None:
    """Let every consumer finish the batch in hand (a broken one may have acked work
    it still runs), then stop them all, so the runs read next are final."""
    try:
        wait_for(run.stack.consumers_idle, timeout_s=30, every_s=0.05)
    except (TimeoutError, redis.RedisError):
        run.problem("consumers still busy 30 s after the drain")
    run.stack.stop_consumers()


def _wait_drained(client: Client, queue: Queue, timeout_s: float) -> bool:
    def settled() -> bool:
        try:
            return queue_drained(client, queue)
        except redis.RedisError:
            return False

    try:
        return wait_for(settled, timeout_s, every_s=0.1)
    except TimeoutError:
        return False
