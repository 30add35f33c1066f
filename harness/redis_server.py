"""A private redis-server, and a private local Redis Cluster, on free loopback ports."""

import shutil
import signal
import subprocess
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from harness.processes import free_port, port_is_free, spawn, wait_for

# What `make run` and k8s/ ship: AOF, fsync every write, never evict.
SHIPPED = ("--appendonly", "yes", "--appendfsync", "always", "--save", "",
           "--maxmemory-policy", "noeviction")  # fmt: skip
EPHEMERAL = ("--appendonly", "no", "--save", "", "--maxmemory-policy", "noeviction")


class RedisServer:
    """A redis-server of our own that can be killed, paused and started again (same
    port, same data directory)."""

    def __init__(
        self,
        data_dir: Path,
        options: tuple[str, ...] = SHIPPED,
        extra: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.options = [*options, *(extra or [])]  # more: an ACL file, TLS, maxmemory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "RedisServer":
        if not shutil.which("redis-server"):
            raise FileNotFoundError("redis-server is not installed: run `make setup`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.data_dir), "--logfile", "redis.log"]
        self.process = spawn([*command, *self.options], {})
        wait_for(lambda: not port_is_free(self.port), timeout_s=10)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def client(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=password, decode_responses=True, socket_timeout=5,
            encoding_errors="surrogateescape",  # as pipeline_core's connect() decodes
        )  # fmt: skip


class LocalCluster:
    """A Redis Cluster of `masters` nodes (each with `replicas` replicas), created with
    `redis-cli --cluster create`, all on loopback ports below 55536."""

    def __init__(
        self,
        data_dir: Path,
        masters: int = 3,
        replicas: int = 0,
        options: tuple[str, ...] = EPHEMERAL,
    ) -> None:
        """`options`: each node's persistence (the fault scenarios ship AOF); a node
        failing for cluster-node-timeout (2 s) is failed over by its replica."""
        self.data_dir = data_dir
        cluster = (*options, "--cluster-enabled", "yes",
                   "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "2000")  # fmt: skip
        self.nodes = [
            RedisServer(data_dir / f"node-{n}", cluster, port=free_port(below=55536))
            for n in range(masters * (1 + replicas))
        ]
        self.replicas = replicas
        self.url = self.nodes[0].url

    def start(self) -> "LocalCluster":
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        redis_cli = shutil.which("redis-cli")  # a full path: nothing found on cwd
        if not redis_cli:
            raise FileNotFoundError("redis-cli is not installed: run `make setup`")
        subprocess.run(
            [redis_cli, "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_for(self._ready, timeout_s=30, every_s=0.1)
        return self

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(
            self.url, decode_responses=True, encoding_errors="surrogateescape"
        )

    def flush(self) -> None:
        """Empty every master (between tests)."""
        with self.client() as client:
            client.flushall(target_nodes=RedisCluster.PRIMARIES)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def _ready(self) -> bool:
        """Every node sees the cluster ok, and every replica is linked to its master
        (until then WAIT cannot count it)."""
        for node in self.nodes:
            with node.client() as client:
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                info = client.info("replication")
            if info["role"] == "slave" and info["master_link_status"] != "up":
                return False
        return True
