"""Sampler: watches XLEN and Redis memory in the background, keeping the peaks (on a
partitioned queue, XLEN summed over the partitions and the fullest master's memory)."""

import threading

import redis

from pipeline_core.connection import Client, queue_node
from pipeline_core.keys import Queue
from pipeline_core.partitions import parts


class Sampler:
    def __init__(self, client: Client, queue: Queue, every_s: float = 0.05) -> None:
        self.client = client
        self.queue = queue
        self.every_s = every_s
        self.peak_xlen = 0
        self.peak_memory_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                length = sum(int(self.client.xlen(q.stream)) for q in parts(self.queue))
                memory = self._memory_bytes()
            except redis.RedisError:
                continue  # Redis is down or paused: a fault being injected
            self.peak_xlen = max(self.peak_xlen, length)
            self.peak_memory_bytes = max(self.peak_memory_bytes, memory)

    def _memory_bytes(self) -> int:
        """Used memory of the fullest node holding a partition (the queue's node)."""
        return max(
            int(queue_node(self.client, part).info("memory")["used_memory"])
            for part in parts(self.queue)
        )
