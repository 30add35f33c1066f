"""Stack: Redis, the dispatcher and consumers as real processes, the one way `make
run`, the fault-injection suite, the bench and the tests start the pipeline.

With `supervise`, a consumer that exits on its own is started again under the same
name, as Kubernetes restarts a crashed container in its pod.
"""

import subprocess
import threading
from pathlib import Path

import redis

from harness.processes import Service, free_port, http_ok, wait_for
from harness.redis_server import SHIPPED, LocalCluster, RedisServer
from harness.sentinel import LocalSentinel


class Stack:
    def __init__(
        self,
        workdir: Path,
        *,
        consumers: int = 2,
        consumer_env: dict[str, str] | None = None,
        dispatcher_env: dict[str, str] | None = None,
        consumer_module: str = "consumer",
        redis_url: str | None = None,
        redis_options: tuple[str, ...] = SHIPPED,
        redis_port: int | None = None,
        port: int | None = None,
        log_files: bool = True,
        supervise: bool = False,
        sentinel: LocalSentinel | None = None,
        cluster: LocalCluster | None = None,
    ) -> None:
        """Starts a Redis of its own (redis_options) unless given the address of one
        (redis_url: someone else's, never stopped here), a Sentinel topology or a
        Redis Cluster to start and stop (the services find its master through the
        Sentinels; the cluster's nodes from its first). Without log_files, output goes
        to our stdout."""
        self.workdir = workdir
        self.sentinel, self.cluster = sentinel, cluster
        self.redis = (
            None
            if redis_url or sentinel or cluster
            else RedisServer(workdir / "redis", redis_options, port=redis_port)
        )
        owned = self.redis or sentinel or cluster
        self.url = redis_url or (owned.url if owned else "")
        redis_env = sentinel.env if sentinel else {}
        self.consumer_count = consumers
        self.consumer_env = redis_env | (consumer_env or {})
        self.dispatcher_env = redis_env | (dispatcher_env or {})
        self.consumer_module = consumer_module
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = workdir / "logs" if log_files else None
        self.consumers: dict[str, Service] = {}
        self.dispatcher: Service | None = None
        self.retired: set[str] = set()
        self.restarts = 0
        self._how: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = (
            threading.Thread(target=self._supervise, daemon=True) if supervise else None
        )

    def start(self, dispatcher: bool = True) -> "Stack":
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        owned = self.redis or self.sentinel or self.cluster
        if owned:
            owned.start()
        if dispatcher:
            self.start_dispatcher()
        for number in range(1, self.consumer_count + 1):
            self.start_consumer(f"c{number}")
        if self.consumer_count:
            wait_for(self.consumers_connected, timeout_s=30, every_s=0.05)
        if self._supervisor:
            self._supervisor.start()
        return self

    def consumers_connected(self) -> bool:
        """Every live consumer has connected to our Redis (CLIENT LIST shows its
        name): past its start-up, its signal handlers are in place."""
        rows = self._client_list()
        names = {str(c.get("name")) for c in rows or ()}
        return rows is None or set(self.live_consumers()) <= names

    def start_dispatcher(
        self,
        timeout_s: float = 30,
        prefix: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        **env: str,
    ) -> Service:
        """The dispatcher on `host`, open to anyone on loopback; elsewhere (a network
        namespace's address, its command wrapped in `prefix`) `env` must give it
        DISPATCH_TOKENS. `env` adds to (or overrides) the stack's settings."""
        settings = {"REDIS_URL": self.url, "PORT": str(self.port), "HOST": host}
        if host == "127.0.0.1":
            settings["DISPATCH_ALLOW_ANONYMOUS"] = "1"  # loopback only
        settings |= self.dispatcher_env | env
        self.base_url = f"http://{host}:{self.port}"
        log = self._log("dispatcher")
        self.dispatcher = Service("dispatcher", settings, log, prefix)
        wait_for(lambda: http_ok(f"{self.base_url}/healthz"), timeout_s=timeout_s)
        return self.dispatcher

    def start_consumer(
        self, name: str, prefix: tuple[str, ...] = (), **env: str
    ) -> Service:
        """A consumer named `name`; `env` adds to (or overrides, REDIS_URL included)
        the stack's consumer settings; `prefix` wraps the command. The supervisor
        restarts it the same way."""
        settings = {
            "METRICS_PORT": "0", "METRICS_HOST": "127.0.0.1", "REDIS_URL": self.url,
            **self.consumer_env,
        }  # fmt: skip
        settings |= {**env, "CONSUMER_NAME": name}
        service = Service(self.consumer_module, settings, self._log(name), prefix)
        with self._lock:
            self.consumers[name] = service
            self._how[name] = (prefix, env)
        return service

    def retire(self, name: str) -> Service:
        """Mark a consumer as meant to stop, so the supervisor leaves it stopped."""
        with self._lock:
            self.retired.add(name)
            return self.consumers[name]

    def consumers_idle(self) -> bool:
        """Every live consumer waits in a blocked XREADGROUP: none is in the middle of
        a batch (what a check must wait for before reading what the tasks did). On a
        cluster, blocked on any node: a consumer blocks only after a whole turn over
        its partitions found nothing."""
        rows = self._client_list()
        waiting = {
            str(c.get("name"))
            for c in rows or ()
            if c.get("cmd") == "xreadgroup" and "b" in str(c.get("flags"))
        }
        return rows is None or set(self.live_consumers()) <= waiting

    def live_consumers(self) -> dict[str, Service]:
        with self._lock:
            return {n: s for n, s in self.consumers.items() if n not in self.retired}

    def log_text(self, name: str) -> str:
        path = self._log(name)
        return path.read_text(errors="replace") if path else ""

    def stop_consumers(self, grace_s: float = 10.0) -> None:
        """SIGTERM every consumer (and stop restarting them); Redis stays up."""
        self._stop.set()
        if self._supervisor and self._supervisor.is_alive():
            self._supervisor.join()
        for service in self.consumers.values():
            service.stop(grace_s, show_log=False)

    def stop(self, grace_s: float = 10.0) -> None:
        """The dispatcher first (no new work), then the consumers (each finishes the
        entry in hand), then Redis."""
        self._stop.set()
        if self._supervisor and self._supervisor.is_alive():
            self._supervisor.join()
        if self.dispatcher is not None:
            self.dispatcher.stop(grace_s, show_log=False)
        for service in self.consumers.values():
            service.stop(grace_s, show_log=False)
        if self.redis:
            self.redis.kill()
        if self.sentinel:
            self.sentinel.stop()
        if self.cluster:
            self.cluster.stop()

    def processes(self) -> "list[subprocess.Popen[bytes]]":
        """Every process of the stack, Redis included (to kill them all at once)."""
        services = [self.dispatcher, *self.consumers.values()]
        found = [service.process for service in services if service]
        if self.sentinel:
            found += self.sentinel.processes()
        if self.cluster:
            found += [node.process for node in self.cluster.nodes if node.process]
        return found + (
            [self.redis.process] if self.redis and self.redis.process else []
        )

    def _client_list(self) -> list[dict[str, str]] | None:
        """CLIENT LIST of the Redis this stack runs (the Sentinels' master, or every
        live node of the cluster); None with someone else's Redis."""
        if self.redis:
            clients = [self.redis.client()]
        elif self.sentinel:
            clients = [self.sentinel.client()]
        elif self.cluster:
            nodes = self.cluster.nodes
            clients = [node.client() for node in nodes if node.process]
        else:
            return None
        rows: list[dict[str, str]] = []
        for client in clients:
            with client:
                try:
                    rows += client.client_list()
                except redis.ConnectionError:
                    continue  # a node killed or restarting: a fault under way
        return rows

    def _log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir else None

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            for name, service in self.live_consumers().items():
                if not service.alive():
                    service.stop(show_log=False)
                    prefix, env = self._how[name]
                    self.start_consumer(name, prefix, **env)
                    self.restarts += 1
