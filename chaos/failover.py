"""A failover under load, through Redis Sentinel. The replicas fall behind (`kill -9`:
what reached their socket but not their AOF is gone too), the master runs on alone for
LAG_S, then dies (`kill -9`); the replicas restart from their AOF and the Sentinels
promote one; the dispatcher and the consumers follow without a restart. Last, the old
master comes back from its files, and the Sentinels make it a replica (its writes of
the lag are discarded by the resync).

With MIN_REPLICAS_ACKED=1 no 202 may be lost; the control without it counts what the
failover loses of what was answered 202 during the lag.

(Stopping the replicas with SIGSTOP makes no lag on loopback: what the master sends
waits in their socket buffers and is applied when they resume.)"""

import time
from collections import Counter

from chaos.checker import healthy, read_runs
from chaos.faults import first_202_after
from chaos.runner import Run
from harness.redis_server import RedisServer
from harness.sentinel import DOWN_AFTER_MS, LocalSentinel

# How long the master runs on without its replicas before it dies: the writes a
# failover can lose.
LAG_S = 1.5


def topology_of(run: Run) -> LocalSentinel:
    if run.stack.sentinel is None:
        raise TypeError("the failover scenarios run on a Sentinel topology")
    return run.stack.sentinel


def sentinel_failover(run: Run) -> None:
    topology = topology_of(run)
    run.wait(1.0 if run.quick else 3.0)
    old = topology.master()
    replicas = [node for node in topology.nodes if node is not old]
    moments = {"replicas_down": (time.monotonic(), time.time())}
    for node in replicas:
        node.kill()
    run.wait(LAG_S)
    moments["killed"] = (time.monotonic(), time.time())
    old.kill()
    for node in replicas:
        node.start()  # from their AOF, still replicas of the dead master
    topology.wait_for_failover(old)
    moments["promoted"] = (time.monotonic(), time.time())
    run.wait(2.0 if run.quick else 5.0)
    old.start()  # from its files: the Sentinels make it a replica of the new master
    run.report.notes["old master back as"] = _role_after_restart(run, old)
    run.wait(1.0 if run.quick else 5.0)
    run.report.notes["moments"] = {
        name: (round(mono, 3), round(wall, 3)) for name, (mono, wall) in moments.items()
    }
    killed = moments["killed"][0]
    run.report.notes["failover s"] = round(moments["promoted"][0] - killed, 2)
    run.report.recovery_s = first_202_after(run, killed)


def no_202_lost_through_the_failover(run: Run) -> None:
    """Nothing answered 202 while nothing could confirm it: no replica, then no
    master (no failover can start within DOWN_AFTER_MS of the kill); 503s in the
    outage; the consumers rode it out; duplicates only of work done before the new
    master was known (its ack lost with the old one)."""
    down, killed, promoted = _moments(run)
    early = killed[0] + DOWN_AFTER_MS / 1000
    blind = Counter(a.status for a in run.ledger.answers
                    if down[0] < a.started_s and a.ended_s < early)  # fmt: skip
    outage = Counter(a.status for a in run.ledger.answers
                     if killed[0] < a.started_s < promoted[0])  # fmt: skip
    run.report.notes |= {"blind answers": dict(blind), "outage answers": dict(outage)}
    if blind["202"]:
        run.problem(f"{blind['202']} answers were 202 with no replica to confirm them")
    if not outage["503"]:
        run.problem("the dispatcher never answered 503 while there was no master")
    if run.stack.restarts:
        run.problem(f"consumers died with the master ({run.stack.restarts} restarts)")
    duplicates_before(run, promoted[1])


def loss_within_the_lag(run: Run) -> None:
    """The control: what it loses was answered 202 during the lag (written on the
    master alone, between the replicas' end and the master's)."""
    down, killed, _ = _moments(run)
    runs = read_runs(run.record_dir)
    lost = [
        entry_id
        for token, entry_id in run.ledger.acknowledged.items()
        if healthy(token) and not runs[token]
    ]
    # Entry IDs are the master's clock in ms; the replicas were ms behind before.
    outside = [i for i in lost if not down[1] - 1 <= _ms(i) / 1000 <= killed[1] + 1]
    run.report.notes["lost outside the lag"] = len(outside)
    if outside:
        run.report.violations.append(
            f"{len(outside)} lost outside the lag: {outside[:3]}"
        )


def duplicates_before(run: Run, promoted_wall: float) -> None:
    """A healthy task may run twice only if its first run ended before the new master
    was known (wall clock): its ack went to the old one and was lost."""
    first_runs: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for path in run.record_dir.glob("*.runs"):
        for line in path.read_text().splitlines():
            token, _consumer, finished = line.split(" ")
            counts[token] += 1
            first_runs[token] = min(first_runs.get(token, 1e18), float(finished))
    twice = [t for t, n in counts.items() if healthy(t) and n > 1]
    late = [t for t in twice if counts[t] > 2 or first_runs[t] > promoted_wall]
    run.report.notes["ran twice (first run before the new master)"] = len(twice)
    if late:
        run.problem(f"{len(late)} entries ran again with no failover to explain it, "
                    f"e.g. {sorted(late)[:3]}")  # fmt: skip


def _role_after_restart(run: Run, node: RedisServer) -> str:
    """The restarted old master's role once the Sentinels have turned it around (they
    wait about 8 s for news of a newer configuration before they do)."""
    deadline = time.monotonic() + 30
    role = "?"
    while time.monotonic() < deadline:
        with node.client() as client:
            info = client.info("replication")
        role = f"{info['role']} ({info.get('master_link_status', '-')})"
        if role == "slave (up)":
            break
        run.wait(0.1)
    return role


def _moments(run: Run) -> list[tuple[float, float]]:
    moments = run.report.notes["moments"]
    if not isinstance(moments, dict):
        raise TypeError(f"sentinel_failover noted no moments: {moments!r}")
    return [moments[name] for name in ("replicas_down", "killed", "promoted")]


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])
