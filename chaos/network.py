"""The network between the services and Redis, for the scenarios that break it: a
partition (one consumer, or the dispatcher, in a network namespace of its own, its link
cut and healed) or a slow network (every consumer through a proxy adding latency)."""

import secrets

from harness.latency import LatencyProxy
from harness.netns import Namespace
from harness.stack import Stack

PARTITIONED = "p1"  # the consumer on the far side of the link
# The namespace of each kind (apart by name and subnet, should both ever exist at once).
NAMESPACES = {"partition": 0, "dispatcher-partition": 1}


class Network:
    def __init__(self, kind: str, delay_s: float = 0.0) -> None:
        """kind: "" (loopback as usual), "partition" (a consumer beyond the link),
        "dispatcher-partition" (the dispatcher beyond it) or "slow"."""
        self.kind, self.delay_s = kind, delay_s
        number = NAMESPACES.get(kind)
        self.namespace = None if number is None else Namespace(number)
        self.proxy: LatencyProxy | None = None
        # The dispatcher in a namespace listens on its address, not on loopback: it
        # takes a token (one per run), which the load presents.
        self.token = secrets.token_hex(16)

    def create(self) -> None:
        if self.namespace:
            self.namespace.create()

    def redis_options(self) -> tuple[str, ...]:
        """Redis must also listen where the namespace's side reaches it."""
        if not self.namespace:
            return ()
        return ("--bind", "127.0.0.1", self.namespace.host_ip, "--protected-mode", "no")

    def start_dispatcher(self, stack: Stack) -> None:
        """On loopback, or inside the namespace: the load reaches it through the link
        (at the namespace's address), and it reaches Redis through the link too."""
        if self.kind != "dispatcher-partition" or not self.namespace:
            stack.start_dispatcher()
            return
        namespace = self.namespace
        stack.start_dispatcher(
            prefix=namespace.prefix(),
            host=namespace.inner_ip,
            REDIS_URL=self._far_side_url(stack),
            DISPATCH_TOKENS=self.token,
        )

    def load_headers(self) -> dict[str, str]:
        """What every request of the load carries (the token, where one is needed)."""
        if self.kind == "dispatcher-partition":
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def start_consumers(self, stack: Stack, count: int) -> None:
        env = {}
        if self.kind == "slow" and stack.redis:
            self.proxy = LatencyProxy(stack.redis.port, self.delay_s).start()
            env["REDIS_URL"] = self.proxy.url
        for number in range(1, count + 1):
            stack.start_consumer(f"c{number}", (), **env)
        if self.kind == "partition" and self.namespace:
            url = self._far_side_url(stack)
            stack.start_consumer(PARTITIONED, self.namespace.prefix(), REDIS_URL=url)

    def delete(self) -> None:
        if self.proxy:
            self.proxy.stop()
        if self.namespace:
            self.namespace.delete()

    def _far_side_url(self, stack: Stack) -> str:
        """Redis as the namespace's side reaches it: at the host's end of the link."""
        if not self.namespace or not stack.redis:
            raise TypeError("a partition needs its namespace and the stack's own Redis")
        return f"redis://{self.namespace.host_ip}:{stack.redis.port}/0"
