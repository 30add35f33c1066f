"""Faults of a partitioned queue (PARTITIONS=6) on a local Redis Cluster of 3 masters,
each with a replica (two partitions a master): a manual failover (CLUSTER FAILOVER on
a replica), `kill -9` of a master (its replica takes over after cluster-node-timeout),
the same after the master ran on alone for LAG_S (its replica killed first: with and
without MIN_REPLICAS_ACKED), and one partition's slot moved to another master, each
under load. The dispatcher and the consumers follow MOVED/ASK (redis-py's cluster
client) and ride out TRYAGAIN and CLUSTERDOWN (503s, a consumer's backoff) without a
restart.

The faults hit partition VICTIM's master (not the first node, whose address is
REDIS_URL: a consumer restarted by its supervisor finds the cluster through it)."""

import time
from collections import Counter

import redis

from chaos.checker import LOST, healthy, read_runs
from chaos.faults import first_202_after
from chaos.runner import Run
from harness.processes import wait_for
from harness.redis_server import LocalCluster, RedisServer
from harness.topology import (
    fail_over,
    move_slot,
    owner,
    replica_of,
    role,
    wait_until_linked,
)
from pipeline_core.keys import slot
from pipeline_core.partitions import locate, parts

PARTITIONS = 6
VICTIM = 2  # partition 2: slot 7217, on the second master as created
# After a fault, clients still learn the new owner of a slot (a MOVED, a refreshed
# slot table): an ack sent to the old owner in that time fails too.
LEARN_S = 2.0
# How long the victim master runs on without its replica before it dies: the writes
# a failover can lose. (Stopping the replica instead makes no lag on loopback: what
# the master sent waits in the replica's socket and is applied when it resumes.)
LAG_S = 1.5


def cluster_of(run: Run) -> LocalCluster:
    if run.stack.cluster is None:
        raise TypeError("the cluster scenarios run on a Redis Cluster")
    return run.stack.cluster


def victim_slot(run: Run) -> int:
    return slot(parts(run.queue)[VICTIM].stream)


def cluster_failover(run: Run) -> None:
    """CLUSTER FAILOVER on the replica of the victim's master: the master holds its
    clients until the replica has caught up, so nothing acknowledged is lost."""
    cluster = cluster_of(run)
    run.wait(1.0 if run.quick else 3.0)
    old = owner(cluster, victim_slot(run))
    replica = replica_of(cluster, old)
    _moment(run, "started")
    fail_over(replica)
    _moment(run, "done")
    wait_until_linked(old)  # the old master is now the new one's replica
    run.report.notes["old master now"] = role(old)
    run.wait(2.0 if run.quick else 5.0)
    _recovered(run)


def cluster_master_kill(run: Run) -> None:
    """kill -9 of the victim's master; its replica is promoted once the others have
    seen it fail for cluster-node-timeout; the old master comes back from its files
    and the cluster makes it a replica of the new one."""
    run.wait(1.0 if run.quick else 3.0)
    old, replica = _victim(run)
    _moment(run, "started")
    old.kill()
    _promoted_and_back(run, old, replica)


def cluster_lagged_kill(run: Run) -> None:
    """kill -9 of the victim's replica; its master runs on alone for LAG_S, then is
    killed too; the replica restarts from its AOF (without what the master wrote
    since) and is promoted (cluster-replica-validity-factor 0: a replica that has not
    seen its master since it started may fail over). With MIN_REPLICAS_ACKED=1 the
    writes of the lag are answered 503; without, 202, and lost."""
    run.wait(1.0 if run.quick else 3.0)
    old, replica = _victim(run)
    _moment(run, "replica_down")
    replica.kill()
    run.wait(LAG_S)
    _moment(run, "started")
    old.kill()
    replica.start()
    _promoted_and_back(run, old, replica)


def _victim(run: Run) -> tuple[RedisServer, RedisServer]:
    """The victim partition's master and its replica; notes the master's partitions."""
    cluster = cluster_of(run)
    old = owner(cluster, victim_slot(run))
    run.report.notes["victim partitions"] = [
        index for index, part in enumerate(parts(run.queue))
        if owner(cluster, slot(part.stream)) is old
    ]  # fmt: skip
    return old, replica_of(cluster, old)


def _promoted_and_back(run: Run, old: RedisServer, replica: RedisServer) -> None:
    """Once the replica is master, the old master comes back from its files: the
    cluster makes it the new master's replica (its own last writes discarded)."""
    wait_for(lambda: _is_master(replica), timeout_s=60, every_s=0.05)
    _moment(run, "done")
    run.wait(2.0 if run.quick else 5.0)
    old.start()
    wait_until_linked(old)
    run.report.notes["old master back as"] = role(old)
    run.wait(1.0 if run.quick else 3.0)
    _recovered(run)


def cluster_reshard(run: Run) -> None:
    """The victim partition's slot moved to the master of partition 4, keys and all,
    under load (harness.topology.move_slot)."""
    cluster = cluster_of(run)
    run.wait(1.0 if run.quick else 3.0)
    target = owner(cluster, slot(parts(run.queue)[4].stream))
    _moment(run, "started")
    victim = parts(run.queue)[VICTIM].stream
    # Half moved for seconds: its results keys first, its stream last.
    moved = move_slot(cluster, victim_slot(run), target, pause_s=1.0, last=victim)
    _moment(run, "done")
    run.report.notes["keys moved"] = moved
    if owner(cluster, victim_slot(run)) is not target:
        run.problem("the slot did not end on the target master")
    run.wait(2.0 if run.quick else 5.0)
    _recovered(run)


def rode_it_out(run: Run) -> None:
    """Nothing accepted lost (the checker); the consumers never restarted; a task ran
    again only after runs that ended before clients could know the slot's new owner
    (each one's ack went to the old owner, or met the half-moved slot: TRYAGAIN)."""
    moments = moments_of(run)
    started, done = moments["started"], moments["done"]
    during = Counter(a.status for a in run.ledger.answers
                     if started[0] < a.started_s < done[0] + LEARN_S)  # fmt: skip
    run.report.notes["answers during the fault"] = dict(during)
    if run.stack.restarts:
        run.problem(f"consumers died with the fault ({run.stack.restarts} restarts)")
    _reruns_within(run, done[1] + LEARN_S)


def loss_measured(run: Run) -> None:
    """kill -9 of a master without WAIT: what it had acknowledged but not yet sent to
    its replica is gone. Measured, not failed (the lost column says how much); each
    loss must be of the killed master's partitions, written just before the kill or
    while it ran alone (entry IDs are that master's clock in ms)."""
    run.report.problems = [p for p in run.report.problems if LOST not in p]
    victims = run.report.notes["victim partitions"]
    moments = moments_of(run)
    killed_wall = moments["started"][1]
    alone_wall = moments.get("replica_down", moments["started"])[1]
    runs = read_runs(run.record_dir)
    lost = [task_id for token, task_id in run.ledger.acknowledged.items()
            if healthy(token) and not runs[token]]  # fmt: skip
    window = (alone_wall - 2, killed_wall + 1)
    outside = [t for t in lost if not _written_on(run, t, victims, window)]
    run.report.notes["lost outside the kill"] = len(outside)
    if outside:
        run.report.violations.append(f"{len(outside)} lost not by the kill: "
                                     f"{outside[:3]}")  # fmt: skip
    rode_it_out(run)


def none_lost_in_the_lag(run: Run) -> None:
    """With MIN_REPLICAS_ACKED=1: nothing answered 202 is lost (the checker), and the
    lag was tested: requests writing to the victim's partitions were answered 503
    (not confirmed, or partly written: not confirmed there) while its replica was
    down."""
    moments = moments_of(run)
    alone, killed = moments["replica_down"][0], moments["started"][0]
    lag = Counter(a.status for a in run.ledger.answers
                  if alone < a.started_s and a.ended_s < killed)  # fmt: skip
    run.report.notes["answers in the lag"] = dict(lag)
    if not lag["503"]:
        run.problem("no write was refused for want of a replica: the lag was untested")
    # Entry IDs are the master's clock in ms: none of the victim's written after its
    # replica was gone (a margin for the kill to land) may have been answered 202.
    victims, walls = run.report.notes["victim partitions"], (
        moments["replica_down"][1] + 0.2, moments["started"][1])  # fmt: skip
    blind = [task_id for task_id in run.ledger.acknowledged.values()
             if _written_on(run, task_id, victims, walls)]  # fmt: skip
    run.report.notes["202 without a replica"] = len(blind)
    if blind:
        run.problem(f"{len(blind)} answered 202 with no replica: {blind[:3]}")
    rode_it_out(run)


def _written_on(
    run: Run, task_id: str, victims: object, walls: tuple[float, float]
) -> bool:
    """Whether the task's entry is in one of `victims`' partitions, written (its ID's
    ms) between the two wall-clock moments."""
    index, _, entry_id = locate(run.queue, task_id)
    written_s = int(entry_id.split("-")[0]) / 1000
    in_victims = isinstance(victims, list) and index in victims
    return in_victims and walls[0] <= written_s <= walls[1]


def _reruns_within(run: Run, until_wall: float) -> None:
    """Every run of a healthy task but its last ended before `until_wall`."""
    ended: dict[str, list[float]] = {}
    for path in run.record_dir.glob("*.runs"):
        for line in path.read_text().splitlines():
            token, _consumer, finished = line.split(" ")
            ended.setdefault(token, []).append(float(finished))
    again = {t: sorted(times) for t, times in ended.items()
             if healthy(t) and len(times) > 1}  # fmt: skip
    late = sorted(t for t, times in again.items() if times[-2] > until_wall)
    run.report.notes["ran again (after runs in the fault)"] = len(again)
    if late:
        run.problem(f"{len(late)} tasks ran again after a run past the fault, "
                    f"e.g. {late[:3]}")  # fmt: skip


def _is_master(node: RedisServer) -> bool:
    try:
        return role(node) == "master"
    except redis.RedisError:
        return False


def _moment(run: Run, name: str) -> None:
    moments = run.report.notes.setdefault("moments", {})
    if isinstance(moments, dict):
        moments[name] = (round(time.monotonic(), 3), round(time.time(), 3))


def moments_of(run: Run) -> dict[str, tuple[float, float]]:
    moments = run.report.notes.get("moments")
    if not isinstance(moments, dict):
        raise TypeError(f"the fault noted no moments: {moments!r}")
    return moments


def _recovered(run: Run) -> None:
    moments = moments_of(run)
    started, done = moments["started"][0], moments["done"][0]
    run.report.notes["fault s"] = round(done - started, 2)
    run.report.recovery_s = first_202_after(run, done)
