"""Who serves what in a LocalCluster, and changing it under load as an operator would:
a replica's manual failover (CLUSTER FAILOVER) and one slot moved to another master
(the CLUSTER SETSLOT IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE steps that
`redis-cli --cluster reshard` takes, but for a slot of our choice: reshard takes the
lowest slots of the source)."""

import time

import redis

from harness.processes import wait_for
from harness.redis_server import LocalCluster, RedisServer

MIGRATE_TIMEOUT_MS = 5000
KEYS_PER_MIGRATE = 100


def node_id(node: RedisServer) -> str:
    with node.client() as client:
        return str(client.execute_command("CLUSTER", "MYID"))


def live(cluster: LocalCluster) -> list[RedisServer]:
    return [node for node in cluster.nodes if node.process is not None]


def role(node: RedisServer) -> str:
    """`master` or `slave`, as the node itself says (ROLE)."""
    with node.client() as client:
        return str(client.role()[0])


def owner(cluster: LocalCluster, slot: int) -> RedisServer:
    """The live master that says it serves `slot` (CLUSTER SLOTS of that master)."""
    for node in live(cluster):
        try:
            if role(node) != "master":
                continue
            with node.client() as client:
                ranges = client.execute_command("CLUSTER", "SLOTS")
        except redis.RedisError:
            continue
        for low, high, master, *_ in ranges:
            if int(low) <= slot <= int(high) and int(master[1]) == node.port:
                return node
    raise LookupError(f"no live master serves slot {slot}")


def replica_of(cluster: LocalCluster, master: RedisServer) -> RedisServer:
    """A live replica of `master`, linked to it (INFO replication)."""
    for node in live(cluster):
        with node.client() as client:
            info = client.info("replication")
        if info["role"] == "slave" and int(info["master_port"]) == master.port:
            return node
    raise LookupError(f"master {master.port} has no live replica")


def fail_over(replica: RedisServer, timeout_s: float = 30) -> None:
    """CLUSTER FAILOVER on a replica: its master stops writes until the replica has
    caught up, then the replica takes over (no acknowledged write is lost)."""
    with replica.client() as client:
        client.execute_command("CLUSTER", "FAILOVER")
    wait_for(lambda: role(replica) == "master", timeout_s=timeout_s, every_s=0.05)


def wait_until_linked(node: RedisServer, timeout_s: float = 60) -> None:
    """Until `node` is a replica whose link to its master is up."""

    def linked() -> bool:
        try:
            with node.client() as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return bool(info["role"] == "slave" and info["master_link_status"] == "up")

    wait_for(linked, timeout_s=timeout_s, every_s=0.1)


def move_slot(
    cluster: LocalCluster,
    slot: int,
    target: RedisServer,
    pause_s: float = 0.0,
    last: str | None = None,
) -> int:
    """Move `slot` from its master to `target` (a master), keys and all, while
    clients use it: the target imports, the source migrates (a key it no longer has
    is asked of the target: ASK; a command over keys of both: TRYAGAIN); MIGRATE
    moves the keys in batches; then both, and every other master, bind the slot to
    the target (clients get MOVED). With `pause_s`, one key at a time, `pause_s`
    after the slot starts migrating and after each key, the key `last` last: the
    slot stays half moved for a while. Returns how many keys moved."""
    source = owner(cluster, slot)
    source_id, target_id = node_id(source), node_id(target)
    batch = 1 if pause_s else KEYS_PER_MIGRATE
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        time.sleep(pause_s)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            keys = sorted(keys, key=lambda key: key == last)[:batch]
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0,
                                MIGRATE_TIMEOUT_MS, "KEYS", *keys)  # fmt: skip
            moved += len(keys)
            time.sleep(pause_s)
        # The target first: once the source lets go, the target must own the slot.
        dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    for node in live(cluster):
        if node not in (source, target) and role(node) == "master":
            with node.client() as other:
                other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved
