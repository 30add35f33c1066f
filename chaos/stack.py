"""The fault-injection stack: the harness's Stack with a private Redis (the shipped
configuration: AOF, fsync always), the dispatcher, and supervised consumers whose tasks
record their runs under workdir/runs."""

from pathlib import Path
from typing import TYPE_CHECKING

from harness.redis_server import LocalCluster
from harness.sentinel import REPLICA, LocalSentinel
from harness.stack import Stack
from pipeline_core.keys import Queue

if TYPE_CHECKING:  # the runner imports this module
    from chaos.runner import Scenario

STREAM, GROUP, DEAD = "tasks", "workers", "{tasks}:dead"
CLAIM_IDLE_MS = 1000
CONSUMER_ENV = {
    "CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
    "CLAIM_INTERVAL_MS": "100",
    "BLOCK_MS": "200",
    "BATCH_SIZE": "10",
    "ACK_INTERVAL_MS": "200",
    "TRIM_INTERVAL_MS": "200",
    "MAX_DELIVERIES": "3",
    "METRICS_PORT": "0",
    "TASK_MODULES": "chaos.tasks",
}


def record_dir(workdir: Path) -> Path:
    return workdir / "runs"


def chaos_queue(scenario: "Scenario") -> Queue:
    return Queue(STREAM, GROUP, DEAD, partitions=scenario.partitions)


def chaos_stack(
    workdir: Path, scenario: "Scenario", redis_options: tuple[str, ...] = ()
) -> Stack:
    """Redis (or a Sentinel topology) and the dispatcher; the scenario's network
    starts the consumers."""
    record_dir(workdir).mkdir(parents=True, exist_ok=True)
    env = {**CONSUMER_ENV, "CHAOS_RECORD_DIR": str(record_dir(workdir))}
    options = (*scenario.redis_options, *redis_options)
    sentinel = (
        LocalSentinel(workdir / "sentinel", options=options)
        if scenario.sentinel
        else None
    )
    cluster, shared = None, {"GROUP": GROUP}
    if scenario.partitions > 1:
        # A replica restarted after its master died may still fail over (its data
        # age is unknown): chaos/cluster.py's lagged kill needs it.
        validity = ("--cluster-replica-validity-factor", "0")
        cluster = LocalCluster(workdir / "cluster", masters=3, replicas=1,
                               options=(*options, *REPLICA, *validity))  # fmt: skip
        shared["PARTITIONS"] = str(scenario.partitions)
    return Stack(
        workdir,
        consumers=0,
        consumer_env={**env, **shared, **scenario.consumer_env},
        dispatcher_env={**shared, **scenario.dispatcher_env},
        consumer_module=scenario.consumer_module,
        redis_options=options,
        supervise=True,
        sentinel=sentinel,
        cluster=cluster,
    )
