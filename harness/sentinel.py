"""A private Redis Sentinel topology on loopback: a master, its replicas and three
Sentinels (`redis-server <file> --sentinel`), tuned to fail over in a few seconds."""

import subprocess
from collections.abc import Callable
from pathlib import Path

import redis

from harness.processes import free_port, port_is_free, spawn, terminate, wait_for
from harness.redis_server import EPHEMERAL, RedisServer
from pipeline_core.connection import connect
from pipeline_core.redis_settings import RedisSettings

MASTER_NAME = "pipeline"
# A master silent this long is down for a Sentinel (subjectively; two of three make
# it objective, and one of them fails over); a failover must be done within the
# timeout, or is tried again after twice it.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000
# Replicas sync from memory at once (no delay waiting for more replicas to join).
REPLICA = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")


class LocalSentinel:
    """Node 0 starts as the master, the others as its replicas; Sentinels (quorum 2)
    watch them under MASTER_NAME, with `password` for clients and each other, and log
    in to Redis as the user `auth` (name, password) when given."""

    def __init__(
        self,
        data_dir: Path,
        replicas: int = 2,
        sentinels: int = 3,
        options: tuple[str, ...] = EPHEMERAL,
        password: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.data_dir, self.password, self.auth = data_dir, password, auth
        self.nodes = [
            RedisServer(data_dir / f"redis-{n}", (*options, *REPLICA))
            for n in range(1 + replicas)
        ]
        for replica in self.nodes[1:]:
            replica.options += ["--replicaof", "127.0.0.1", str(self.nodes[0].port)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.url = self.nodes[0].url  # the first master: REDIS_URL's scheme and db

    @property
    def env(self) -> dict[str, str]:
        """What the services read to find the master through these Sentinels."""
        addresses = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        env = {"REDIS_SENTINELS": addresses, "REDIS_SENTINEL_MASTER": MASTER_NAME}
        return env | (
            {"REDIS_SENTINEL_PASSWORD": self.password} if self.password else {}
        )

    def start(self) -> "LocalSentinel":
        for node in self.nodes:
            node.start()
        wait_for(self._replicas_linked, timeout_s=30, every_s=0.05)
        for number, port in enumerate(self.sentinel_ports):
            path = self._write_config(number, port)
            self.sentinels.append(spawn(["redis-server", str(path), "--sentinel"], {}))
            wait_for(self._listening(port), timeout_s=10)
        wait_for(self._sentinels_agree, timeout_s=30, every_s=0.05)
        return self

    def master(self) -> RedisServer:
        """The node the Sentinels name as master now."""
        host_port = self.master_address()
        [node] = [n for n in self.nodes if host_port == ("127.0.0.1", n.port)]
        return node

    def master_address(self) -> tuple[str, int] | None:
        """What the first Sentinel that answers says (None: none answers)."""
        for port in self.sentinel_ports:
            try:
                with self._sentinel(port) as sentinel:
                    found = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            return (str(found[0]), int(found[1])) if found else None
        return None

    def wait_for_failover(self, old: RedisServer, timeout_s: float = 30) -> RedisServer:
        """The replica the Sentinels promoted in place of `old`, once it is master."""

        def promoted() -> RedisServer | None:
            address = self.master_address()
            if address is None or address[1] == old.port:
                return None
            node = self.master()
            with node.client() as client:
                role = client.role()
            return node if role[0] == "master" else None

        found = wait_for(promoted, timeout_s=timeout_s, every_s=0.01)
        if found is None:  # wait_for returns only what is truthy
            raise TypeError("no promoted master")
        return found

    def client(self) -> redis.Redis:
        """A decoded client of whichever node is master (it follows a failover)."""
        settings = RedisSettings(
            url=self.url,
            sentinels=tuple(("127.0.0.1", port) for port in self.sentinel_ports),
            sentinel_master=MASTER_NAME,
            sentinel_password=self.password,
            cluster=False,
        )
        client = connect(settings, socket_timeout_s=5.0)
        if not isinstance(client, redis.Redis):
            raise TypeError("a Sentinel's master is a single node")
        return client

    def stop(self) -> None:
        terminate(self.sentinels, grace_s=5)
        for node in self.nodes:
            node.kill()

    def processes(self) -> "list[subprocess.Popen[bytes]]":
        nodes = [node.process for node in self.nodes if node.process]
        return nodes + self.sentinels

    def _write_config(self, number: int, port: int) -> Path:
        """A Sentinel rewrites its file (what it learns): one of its own."""
        directory = self.data_dir / f"sentinel-{number}"
        directory.mkdir(parents=True, exist_ok=True)
        master = self.nodes[0].port
        lines = [
            f"port {port}", "bind 127.0.0.1", f"dir {directory}",
            "logfile sentinel.log",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        ]  # fmt: skip
        if self.auth:
            user, secret = self.auth
            lines += [f"sentinel auth-user {MASTER_NAME} {user}",
                      f"sentinel auth-pass {MASTER_NAME} {secret}"]  # fmt: skip
        if self.password:  # asked of clients, and of each other
            lines += [
                f"requirepass {self.password}",
                f"sentinel sentinel-pass {self.password}",
            ]
        path = directory / "sentinel.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    @staticmethod
    def _listening(port: int) -> Callable[[], bool]:
        return lambda: not port_is_free(port)

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, password=self.password, decode_responses=True, socket_timeout=1
        )

    def _replicas_linked(self) -> bool:
        for replica in self.nodes[1:]:
            with replica.client() as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def _sentinels_agree(self) -> bool:
        """Every Sentinel sees the master, its replicas and the other Sentinels."""
        for port in self.sentinel_ports:
            with self._sentinel(port) as sentinel:
                state = sentinel.sentinel_master(MASTER_NAME)
            others, replicas = state["num-other-sentinels"], state["num-slaves"]
            if (others, replicas) != (
                len(self.sentinel_ports) - 1,
                len(self.nodes) - 1,
            ):
                return False
        return True
