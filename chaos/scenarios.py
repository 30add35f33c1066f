"""The fault scenarios and the broken controls. Each injects its faults while the load
runs (`inject`) and adds its own checks after the drain (`verify`, in verdicts.py)."""

import signal
import threading
import time
from collections.abc import Callable

from chaos import cluster, dispatcher_partition, failover, redis_faults, verdicts
from chaos.checker import drained
from chaos.faults import (
    busiest,
    first_202_after,
    kill_consumers,
    late_acks,
    note_held,
    pause_a_holder,
    pending_of,
    recovered,
)
from chaos.load import Mix, Retries, steady
from chaos.runner import Run, Scenario
from chaos.stack import GROUP, STREAM
from harness.processes import wait_for
from harness.redis_server import EPHEMERAL, SHIPPED

CLAIM_IDLE_S = verdicts.CLAIM_IDLE_S
GRACE_S = 10.0  # the terminationGracePeriodSeconds a rollout would give


def sigkill(run: Run) -> None:
    kill_consumers(run, kills=3 if run.quick else 10, every_s=1.0 if run.quick else 1.5)


def sigstop(run: Run) -> None:
    run.wait(1.0)
    victim, held = pause_a_holder(run)
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
    run.report.notes["late_acks"] = late_acks(run, victim)


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


def redis_kill(run: Run) -> None:
    """kill -9 of Redis with the shipped configuration, restarted from its files. A
    batch whose tasks ran but whose ack did not reach Redis runs again: the entries
    pending when Redis died are that fault's (writes paused to read them exactly)."""
    run.wait(1.0)
    run.client.client_pause(5000, all=False)  # writes wait; XPENDING still answers
    note_held(run, pending_of(run))
    killed = time.monotonic()
    run.server.kill()
    run.wait(2.0 if run.quick else 5.0)
    restarted = time.monotonic()
    run.server.start()
    run.wait(2.0 if run.quick else 5.0)
    run.report.notes["outage"] = (killed, restarted)
    run.report.recovery_s = first_202_after(run, restarted)


def redis_stall(run: Run) -> None:
    run.wait(1.0)
    run.server.pause()
    run.wait(3.0 if run.quick else 4.0)  # under the dispatcher's 5 s socket timeout
    resumed = time.monotonic()
    run.server.resume()
    run.wait(2.0 if run.quick else 5.0)
    run.report.recovery_s = first_202_after(run, resumed)


def poison_mix(number: int) -> tuple[str, int, float]:
    if number % 20 == 7:
        return "chaos.poison", 1, 0.0
    if number % 40 == 13:
        return "chaos.crash", 1, 0.0
    return "chaos.work", 10, 0.005


def poison(run: Run) -> None:
    """Crash-prone entries kill their consumer: each crash is a fault that may catch
    healthy entries held (the supervisor restarts the consumer). Watched until the
    group drains, the load stopped first: a crash-prone entry goes on killing
    consumers (up to MAX_DELIVERIES times) after the load ends."""
    holding: dict[str, tuple[int, set[str]]] = {}
    dead: set[int] = set()
    deadline = time.monotonic() + (4.0 if run.quick else 15.0)
    while time.monotonic() < deadline:
        _watch_crashes(run, holding, dead)
    run.load.stop()  # the runner's stop finds it stopped
    deadline = time.monotonic() + 60
    while not drained(run.client, STREAM, GROUP) and time.monotonic() < deadline:
        _watch_crashes(run, holding, dead)


def _watch_crashes(
    run: Run, holding: dict[str, tuple[int, set[str]]], dead: set[int]
) -> None:
    """One look, then 50 ms: a consumer dead since the last look (or already started
    again under its name) held what it held then, and what its name holds now (its
    entries stay pending under its name until claimed, CLAIM_IDLE_MS later): a batch
    read and crashed between two looks is caught too."""
    for name, service in run.stack.live_consumers().items():
        pid, held = holding.get(name, (service.pid, set()))
        if pid not in dead and (pid != service.pid or not service.alive()):
            dead.add(pid)
            note_held(run, held | pending_of(run, name))
        if service.alive():
            holding[name] = (service.pid, pending_of(run, name))
    run.wait(0.05)


def burst(run: Run) -> None:
    run.wait(3.0 if run.quick else 10.0)


def long_tasks(run: Run) -> None:
    run.wait(1.5)
    victim = busiest(run)
    held = pending_of(run, victim)
    run.wait(1.0)  # its task (2.5 s) is under way, past claim_idle_ms
    run.stack.consumers[victim].signal(signal.SIGKILL)
    note_held(run, held)
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


def delayed_mix(number: int) -> tuple[str, int, float]:
    """One request in three: 5 tasks that fail twice, then succeed (chaos.flaky)."""
    if number % 3 == 2:
        return "chaos.flaky", 5, 0.0
    return "chaos.work", 10, 0.005


def delayed_when(number: int) -> dict[str, float]:
    """Of every 6 requests, 2 after a countdown (0.5 to 2 s), 1 at a time 1.5 s
    ahead, 3 now: delayed and not, retried (chaos.flaky) and not, in every pairing."""
    if number % 6 in (1, 5):
        return {"countdown": 0.5 + (number % 4) * 0.5}
    if number % 6 == 4:
        return {"run_at": time.time() + 1.5}
    return {}


def ack_first(run: Run) -> None:
    # The broken consumer never reclaims: what a kill caught between its read and its
    # ack stays pending for good, so waiting long for a recovery proves nothing.
    kill_consumers(run, kills=3, every_s=1.0, recovery_s=2.0)


LONG: Mix = steady("chaos.work", 1, CLAIM_IDLE_S * 2.5)

SCENARIOS = [
    Scenario("sigkill", sigkill, verdicts.duplicates_within_what_faults_held),
    # Delayed dispatch and retries through the delayed set, consumers SIGKILLed.
    Scenario("delayed-retries", sigkill, verdicts.delayed_and_retried_within_faults,
             mix=delayed_mix, when=delayed_when),
    # Tasks of 20 ms: the paused consumer is caught holding a batch, not between two.
    Scenario("sigstop", sigstop, verdicts.duplicates_within_what_faults_held,
             mix=steady("chaos.work", 10, 0.02), rate_per_s=150),
    Scenario("rolling-restart", rolling_restart, verdicts.no_duplicates),
    Scenario("redis-kill", redis_kill, verdicts.answered_503_while_down),
    Scenario("redis-stall", redis_stall, verdicts.no_duplicates),
    Scenario("poison", poison, verdicts.healthy_work_flows_past_poison,
             mix=poison_mix, rate_per_s=150),
    Scenario("burst", burst, verdicts.backpressure_held,
             mix=steady("chaos.work", 100, 0.005), rate_per_s=4000,
             dispatcher_env={"MAX_BACKLOG": str(verdicts.MAX_BACKLOG)}),
    Scenario("partition", redis_faults.partition, redis_faults.rejoined_without_restart,
             consumers=1, network="partition"),
    # Clients with an Idempotency-Key each, retrying with it (2 s timeout).
    Scenario("dispatcher-partition", dispatcher_partition.dispatcher_partition,
             dispatcher_partition.each_message_once, network="dispatcher-partition",
             retries=Retries(timeout_s=2.0, until_s=30.0, pause_s=0.25),
             dispatcher_env={"SOCKET_TIMEOUT_S":
                             str(dispatcher_partition.SOCKET_TIMEOUT_S)}),
    Scenario("redis-full", redis_faults.redis_full, redis_faults.memory_refusals_named),
    Scenario("redis-misconf", redis_faults.failed_persistence,
             redis_faults.misconf_refusals_named,
             redis_options=(*SHIPPED, "--enable-protected-configs", "yes")),
    Scenario("undecodable", redis_faults.undecodable_entries,
             redis_faults.each_undecodable_dead_once),
    Scenario("future-id", redis_faults.future_id, redis_faults.pinned_ids_seen),
    Scenario("second-group", redis_faults.second_group,
             redis_faults.other_group_reported),
]  # fmt: skip
# Long tasks by nature (each lasts 2.5 x CLAIM_IDLE_MS) or slowed on purpose: in make
# chaos only, to keep make test under 15 minutes. make test proves the same behaviour
# in tests/test_consumer_heartbeat.py (a long task keeps its claim) and
# tests/test_consumer_keeper.py (so does one holding the GIL).
LONGER = [
    Scenario("long-task", long_tasks, verdicts.no_duplicates, mix=LONG,
             rate_per_s=0.8, consumer_env={"BATCH_SIZE": "1"}),
    # Tasks holding the GIL (no heartbeat thread runs) for 2.5 x CLAIM_IDLE_MS.
    Scenario("gil-bound", burst, verdicts.no_duplicates, rate_per_s=2,
             mix=steady("chaos.gil", 1, CLAIM_IDLE_S * 2.5), drain_s=90),
    Scenario("slow-network", burst, redis_faults.no_spurious_takeovers,
             network="slow", network_delay_s=0.075, rate_per_s=30, drain_s=90),
]  # fmt: skip
CONTROLS = [
    Scenario("control-ack-first", ack_first, verdicts.loss_within_acked_batches,
             consumer_module="chaos.broken", expect_loss=True, drain_s=10),
    Scenario("control-maxlen", naive_trim, mix=steady("chaos.work", 10, 0.02),
             rate_per_s=400, expect_loss=True, drain_s=20),
    # Redis without persistence, killed and restarted under a backlog (work arrives
    # faster than 2 consumers finish it): what it held is gone.
    Scenario("control-no-aof", redis_kill, redis_options=EPHEMERAL, expect_loss=True,
             mix=steady("chaos.work", 10, 0.02), rate_per_s=400),
]  # fmt: skip

# A failover through Redis Sentinel (chaos/failover.py), with work arriving faster than
# two consumers finish it (a backlog a failover can lose). Not in make test's quick
# tier: tests/test_sentinel.py runs the same story once.
BACKLOG: Mix = steady("chaos.work", 10, 0.01)
FAILOVERS = [
    Scenario("sentinel-failover", failover.sentinel_failover,
             failover.no_202_lost_through_the_failover, mix=BACKLOG, rate_per_s=300,
             sentinel=True, dispatcher_env={"MIN_REPLICAS_ACKED": "1"}),
    Scenario("control-sentinel-no-wait", failover.sentinel_failover,
             failover.loss_within_the_lag, mix=BACKLOG, rate_per_s=300, sentinel=True,
             expect_loss=True),
]  # fmt: skip


# A partitioned queue (PARTITIONS=6) on a Redis Cluster of 3 masters, each with a
# replica (chaos/cluster.py). Not in make test: tests/test_partitions.py runs a SIGKILL
# on the same cluster once.
def on_cluster(
    name: str,
    inject: Callable[[Run], None],
    verify: Callable[[Run], None],
    dispatcher_env: dict[str, str] | None = None,
    expect_loss: bool = False,
    backlog: bool = False,
) -> Scenario:
    """`backlog`: work arrives faster than two consumers finish it (a backlog a
    failover can lose: what consumers have run is not lost work)."""
    return Scenario(name, inject, verify, partitions=cluster.PARTITIONS,
                    mix=BACKLOG if backlog else steady("chaos.work", 10, 0.005),
                    rate_per_s=300 if backlog else 150, drain_s=90,
                    dispatcher_env=dispatcher_env or {},
                    expect_loss=expect_loss)  # fmt: skip


WAIT_1 = {"MIN_REPLICAS_ACKED": "1", "REPLICA_ACK_TIMEOUT_MS": "500"}


CLUSTER = [
    on_cluster("partitions-sigkill", sigkill,
               verdicts.duplicates_within_what_faults_held),
    on_cluster("cluster-failover", cluster.cluster_failover, cluster.rode_it_out),
    # No WAIT: what the master had not yet sent to its replica is lost (measured).
    on_cluster("cluster-master-kill", cluster.cluster_master_kill,
               cluster.loss_measured),
    on_cluster("cluster-reshard", cluster.cluster_reshard, cluster.rode_it_out),
    # The master runs on alone for 1.5 s, then dies: with WAIT nothing 202 is lost;
    # the control without it loses what it answered 202 in those 1.5 s.
    on_cluster("cluster-master-kill-wait", cluster.cluster_lagged_kill,
               cluster.none_lost_in_the_lag, dispatcher_env=WAIT_1, backlog=True),
    on_cluster("control-cluster-no-wait", cluster.cluster_lagged_kill,
               cluster.loss_measured, expect_loss=True, backlog=True),
]  # fmt: skip
