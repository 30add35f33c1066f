"""Sampler: watches XLEN and Redis memory in the background, keeping the peaks."""

import threading

import redis


class Sampler:
    def __init__(self, client: redis.Redis, stream: str, every_s: float = 0.05) -> None:
        self.client = client
        self.stream = stream
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
                length = self.client.xlen(self.stream)
                memory = self.client.info("memory")["used_memory"]
            except redis.RedisError:
                continue  # Redis is down or paused: a fault being injected
            self.peak_xlen = max(self.peak_xlen, int(length))
            self.peak_memory_bytes = max(self.peak_memory_bytes, int(memory))
