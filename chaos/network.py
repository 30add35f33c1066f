"""The network between consumers and Redis, for the scenarios that break it: a
partition (one consumer in a network namespace of its own, its link cut and healed) or
a slow network (every consumer through a proxy adding latency)."""

from harness.latency import LatencyProxy
from harness.netns import Namespace
from harness.stack import Stack

PARTITIONED = "p1"  # the consumer on the far side of the link


class Network:
    def __init__(self, kind: str, delay_s: float = 0.0) -> None:
        """kind: "" (loopback as usual), "partition" or "slow"."""
        self.kind, self.delay_s = kind, delay_s
        self.namespace = Namespace(0) if kind == "partition" else None
        self.proxy: LatencyProxy | None = None

    def create(self) -> None:
        if self.namespace:
            self.namespace.create()

    def redis_options(self) -> tuple[str, ...]:
        """Redis must also listen where the namespace's side reaches it."""
        if not self.namespace:
            return ()
        return ("--bind", "127.0.0.1", self.namespace.host_ip, "--protected-mode", "no")

    def start_consumers(self, stack: Stack, count: int) -> None:
        env = {}
        if self.kind == "slow" and stack.redis:
            self.proxy = LatencyProxy(stack.redis.port, self.delay_s).start()
            env["REDIS_URL"] = self.proxy.url
        for number in range(1, count + 1):
            stack.start_consumer(f"c{number}", (), **env)
        if self.namespace and stack.redis:
            url = f"redis://{self.namespace.host_ip}:{stack.redis.port}/0"
            stack.start_consumer(PARTITIONED, self.namespace.prefix(), REDIS_URL=url)

    def delete(self) -> None:
        if self.proxy:
            self.proxy.stop()
        if self.namespace:
            self.namespace.delete()
