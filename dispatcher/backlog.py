"""The group's backlog, for backpressure: new dispatches get 429 while it is long."""

import time

from pipeline_core.connection import Client
from pipeline_core.group_state import read_backlog
from pipeline_core.keys import Queue

# Backpressure needs no per-request precision, and a read per request would add a Redis
# round trip to every dispatch: the value is read again when older than this.
REFRESH_S = 0.1


class Backlog:
    """The backlog (lag + pending) as of at most REFRESH_S ago, plus what this process
    wrote since."""

    def __init__(self, client: Client, queue: Queue) -> None:
        self.client, self.queue = client, queue
        self._value = 0
        self._read_s = float("-inf")

    def current(self) -> int:
        now = time.monotonic()
        if now - self._read_s >= REFRESH_S:
            self._value = read_backlog(self.client, self.queue)
            self._read_s = now
        return self._value

    def add(self, entries: int) -> None:
        self._value += entries  # threads may race here: an estimate, corrected soon
