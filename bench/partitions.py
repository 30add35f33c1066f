"""One queue over a local Redis Cluster of 3 masters (PARTITIONS = 1, 3, 6): the drain
rate of 2 `python -m consumer` processes with default settings, and what each entry
costs in CPU on the Redis side (all masters' user + system time, per entry) and on the
consumer side. The clock is the drain's (bench/drain.py): the consumers wait idle,
are stopped while every partition's stream is filled, and the clock starts as they are
resumed. On this machine all shards and consumers share two cores, so the figures for
M machines are computed from the CPU per entry (README, "Scaling out")."""

import signal
import time
from pathlib import Path

import psutil
from redis.cluster import RedisCluster

from bench.drain import CONSUMER_ENV, NOOP
from bench.table import Row
from harness.processes import Service, wait_for
from harness.redis_server import LocalCluster
from pipeline_core.connection import Client
from pipeline_core.keys import Queue, slot
from pipeline_core.partitions import parts

COUNTS = (1, 3, 6)
FILL_CHUNK = 10_000


def measure(count: int, workdir: Path) -> dict[str, float]:
    cluster = LocalCluster(workdir / "cluster", masters=3).start()
    figures: dict[str, float] = {}
    try:
        for partitions in COUNTS:
            figures |= _one(cluster, partitions, count, workdir / f"p{partitions}")
    finally:
        cluster.stop()
    return figures


def _one(
    cluster: LocalCluster, partitions: int, count: int, log_dir: Path
) -> dict[str, float]:
    queues = parts(Queue(partitions=partitions))
    client = cluster.client()
    cluster.flush()
    for queue in queues:
        client.xgroup_create(queue.stream, queue.group, "0", mkstream=True)
    env = {**CONSUMER_ENV, "REDIS_URL": cluster.url, "PARTITIONS": str(partitions)}
    log_dir.mkdir(parents=True, exist_ok=True)
    services = [Service("consumer", {**env, "CONSUMER_NAME": f"bench-{n}"},
                        log_dir / f"{n}.log") for n in range(2)]  # fmt: skip
    try:
        wait_for(lambda: _joined(cluster, queues, 2), timeout_s=60, every_s=0.05)
        return _timed(cluster, client, queues, services, count)
    finally:
        for service in services:
            service.stop(show_log=False)
        client.close()


def _timed(
    cluster: LocalCluster,
    client: RedisCluster,
    queues: tuple[Queue, ...],
    services: list[Service],
    count: int,
) -> dict[str, float]:
    for service in services:
        service.signal(signal.SIGSTOP)
    _fill(client, queues, count)
    shards = [psutil.Process(n.process.pid) for n in cluster.nodes if n.process]
    workers = [psutil.Process(service.pid) for service in services]
    before = [_cpu_s(p) for p in shards], [_cpu_s(p) for p in workers]
    started = time.perf_counter()
    for service in services:
        service.signal(signal.SIGCONT)
    wait_for(lambda: _drained(client, queues, count), timeout_s=900, every_s=0.005)
    seconds = time.perf_counter() - started
    shard_s = [_cpu_s(p) - b for p, b in zip(shards, before[0], strict=True)]
    worker_s = sum(_cpu_s(p) for p in workers) - sum(before[1])
    p = len(queues)
    return {
        f"cluster drain p{p}": count / seconds,
        f"redis cpu us p{p}": sum(shard_s) / count * 1e6,
        f"busiest shard cpu p{p}": max(shard_s) / seconds,
        f"consumer cpu us p{p}": worker_s / count * 1e6,
    }


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _fill(client: Client, queues: tuple[Queue, ...], count: int) -> None:
    """count entries, round-robin over the partitions (as the dispatcher spreads)."""
    for first in range(0, count, FILL_CHUNK):
        with client.pipeline(transaction=False) as pipe:
            for n in range(first, min(first + FILL_CHUNK, count)):
                pipe.xadd(queues[n % len(queues)].stream, NOOP)
            pipe.execute()


def _joined(cluster: LocalCluster, queues: tuple[Queue, ...], consumers: int) -> bool:
    """Every consumer is connected to every master holding a partition (its first
    turn). Redis 7.0 adds a consumer to a group only once it reads an entry, so XINFO
    CONSUMERS cannot tell; CLIENT LIST names them."""
    wanted = {f"bench-{n}" for n in range(consumers)}
    with cluster.nodes[0].client() as first:
        ranges = first.execute_command("CLUSTER SLOTS")
    ports = {int(master[1]) for low, high, master, *_ in ranges
             for q in queues if int(low) <= slot(q.stream) <= int(high)}  # fmt: skip
    for node in cluster.nodes:
        if node.port in ports:
            with node.client() as one:
                if not wanted <= {str(c.get("name")) for c in one.client_list()}:
                    return False
    return True


def _drained(client: RedisCluster, queues: tuple[Queue, ...], count: int) -> bool:
    read = pending = 0
    for queue in queues:
        [group] = client.xinfo_groups(queue.stream)
        read += group["entries-read"] or 0
        pending += group["pending"]
    return bool(read >= count and pending == 0)


def rows(count: int) -> list[Row]:
    """The cluster rows: the drain beside our one-Redis drain of the same size, then
    what an entry costs (CPU), from which README computes M machines' throughput."""
    made = []
    for p in COUNTS:
        made += [
            Row(f"Cluster of 3 masters, PARTITIONS={p}: drain of {count:,}, "
                "2 consumers", f"cluster drain p{p}", "drain 2",
                "one Redis, 2 consumers"),
            Row(f"PARTITIONS={p}: Redis CPU per entry (all masters)",
                f"redis cpu us p{p}", unit=" µs", digits=1),
            Row(f"PARTITIONS={p}: the busiest master's share of a core",
                f"busiest shard cpu p{p}", unit="", digits=2),
            Row(f"PARTITIONS={p}: consumer CPU per entry (both)",
                f"consumer cpu us p{p}", unit=" µs", digits=1),
        ]  # fmt: skip
    return made
