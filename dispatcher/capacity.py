"""Room for new work, checked before anything is written: the group's backlog (429)
and the queue's Redis memory budget (507). Both are read at most every REFRESH_S: a
read per request would add Redis round trips to every dispatch, and backpressure needs
no per-request precision."""

import time
from typing import Any

from pipeline_core.connection import Client
from pipeline_core.keys import Queue
from pipeline_core.lag import read_backlog
from pipeline_core.memory import Memory, read_memory

REFRESH_S = 0.1
# What one payload byte costs in Redis once written (entry, stream node, its result
# later): a deliberate overestimate, so a request never lands past the budget.
BYTES_PER_PAYLOAD_BYTE = 3

Refusal = tuple[dict[str, Any], int, dict[str, str]]
RETRY_LATER = {"Retry-After": "1"}


class Capacity:
    """The backlog and memory as of at most REFRESH_S ago, plus what this process
    wrote since (threads may race on the additions: an estimate, corrected soon)."""

    def __init__(
        self, client: Client, queue: Queue, max_backlog: int, budget: tuple[int, float]
    ) -> None:
        self.client, self.queue, self.max_backlog = client, queue, max_backlog
        self.explicit_budget, self.budget_ratio = budget
        self.backlog = 0
        self.memory = Memory(0, 0)
        self._read_s = float("-inf")

    def refusal(self, count: int, payload_bytes: int) -> Refusal | None:
        """Why a request of `count` entries cannot be taken now, or None."""
        self._refresh()
        if self.backlog + count > self.max_backlog:
            body = {"error": "backlog full", "backlog": self.backlog,
                    "limit": self.max_backlog}  # fmt: skip
            return body, 429, RETRY_LATER
        budget = self.memory.budget_bytes(self.explicit_budget, self.budget_ratio)
        needed = payload_bytes * BYTES_PER_PAYLOAD_BYTE
        if budget and self.memory.used_bytes + needed > budget:
            body = {
                "error": "redis memory over budget",
                "rule": "the queue holds what its Redis memory budget allows",
                "used_bytes": self.memory.used_bytes,
                "budget_bytes": budget,
            }
            return body, 507, RETRY_LATER
        return None

    def add(self, count: int, payload_bytes: int) -> None:
        self.backlog += count
        used = self.memory.used_bytes + payload_bytes * BYTES_PER_PAYLOAD_BYTE
        self.memory = Memory(used, self.memory.max_bytes)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_s >= REFRESH_S:
            self.backlog = read_backlog(self.client, self.queue)
            self.memory = read_memory(self.client, self.queue)
            self._read_s = now
