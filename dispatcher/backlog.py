"""The group's backlog, for backpressure: new dispatches get 429 while it is long."""

import time

import redis

# Backpressure needs no per-request precision, and a read per request would add a Redis
# round trip to every dispatch: the value is read again when older than this.
REFRESH_S = 0.1


def backlog(client: redis.Redis, stream: str, group: str) -> int:
    """Entries the group has still to finish: lag + pending. XLEN stands in when Redis
    cannot tell the lag (NULL after deletions) or no consumer has created the group."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return 0  # no stream yet
    ours = [g for g in groups if g["name"] == group]
    if not ours or ours[0]["lag"] is None:
        length = client.xlen(stream)
        return length if isinstance(length, int) else 0
    return int(ours[0]["lag"]) + int(ours[0]["pending"])


class Backlog:
    """The backlog as of at most REFRESH_S ago, plus what this process wrote since."""

    def __init__(self, client: redis.Redis, stream: str, group: str) -> None:
        self.client, self.stream, self.group = client, stream, group
        self._value = 0
        self._read_s = float("-inf")

    def current(self) -> int:
        now = time.monotonic()
        if now - self._read_s >= REFRESH_S:
            self._value = backlog(self.client, self.stream, self.group)
            self._read_s = now
        return self._value

    def add(self, entries: int) -> None:
        self._value += entries  # threads may race here: an estimate, corrected soon
