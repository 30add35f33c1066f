"""Stack: a private Redis (AOF, fsync always), the dispatcher and supervised consumers.

The supervisor restarts a consumer that exits on its own under the same name, as
Kubernetes restarts a crashed container in its pod.
"""

import threading
from pathlib import Path

from chaos.processes import RedisServer, Service, free_port, wait_for
from scripts.run_local import http_ok

STREAM, GROUP, DEAD = "tasks", "workers", "tasks:dead"
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


class Stack:
    def __init__(
        self,
        workdir: Path,
        consumers: int = 2,
        consumer_env: dict[str, str] | None = None,
        dispatcher_env: dict[str, str] | None = None,
        consumer_module: str = "consumer",
    ) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir / "redis")
        self.record_dir = workdir / "runs"
        self.log_dir = workdir / "logs"
        self.consumer_count = consumers
        self.consumer_env = {**CONSUMER_ENV, **(consumer_env or {})}
        self.dispatcher_env = dispatcher_env or {}
        self.consumer_module = consumer_module
        self.consumers: dict[str, Service] = {}
        self.retired: set[str] = set()
        self.restarts = 0
        self.base_url = ""
        self.dispatcher: Service | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> "Stack":
        for folder in (self.record_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        port = free_port()
        env = {"REDIS_URL": self.redis.url, "PORT": str(port), "HOST": "127.0.0.1"}
        env["DISPATCH_ALLOW_ANONYMOUS"] = "1"  # loopback only
        env |= {"GROUP": GROUP, **self.dispatcher_env}
        self.dispatcher = Service("dispatcher", env, self.log_dir / "dispatcher.log")
        self.base_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{self.base_url}/healthz"), timeout_s=30)
        for number in range(1, self.consumer_count + 1):
            self.start_consumer(f"c{number}")
        self._supervisor.start()
        return self

    def start_consumer(self, name: str) -> Service:
        env = {**self.consumer_env, "REDIS_URL": self.redis.url, "CONSUMER_NAME": name}
        env["CHAOS_RECORD_DIR"] = str(self.record_dir)
        service = Service(self.consumer_module, env, self.log_dir / f"{name}.log")
        with self._lock:
            self.consumers[name] = service
        return service

    def retire(self, name: str) -> Service:
        """Mark a consumer as meant to stop, so the supervisor leaves it stopped."""
        with self._lock:
            self.retired.add(name)
            return self.consumers[name]

    def live_consumers(self) -> dict[str, Service]:
        with self._lock:
            return {n: s for n, s in self.consumers.items() if n not in self.retired}

    def log_text(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        for service in self.consumers.values():
            service.stop(show_log=False)
        if self.dispatcher is not None:
            self.dispatcher.stop(show_log=False)
        self.redis.kill()

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            for name, service in self.live_consumers().items():
                if not service.alive():
                    service.stop(show_log=False)
                    self.start_consumer(name)
                    self.restarts += 1
