"""The keeper: a small process beside each worker that keeps the claims of a task that
holds the GIL, and stops a task that holds it past its timeout.

The heartbeat thread renews held claims, but no thread runs while C code holds the GIL
(one long regex match, a C extension's loop): claims would lapse and another consumer
would run the entry again. The worker publishes what it holds in shared memory (the
Beacon); the keeper, a forked child with its own Redis connection, renews those claims
whenever the heartbeat is overdue while the worker still runs. A worker that is stopped
(SIGSTOP: state T) gets no help, so its entries are taken over as before; a partition
cuts the keeper off too. A task holding the GIL past TASK_TIMEOUT_S (+ a grace period)
cannot be interrupted from inside: the keeper kills the worker, whose supervisor
restarts it, and the entry is reclaimed like any crash's.
"""

import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import os
import signal
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline_core.replies import FAILURES

log = logging.getLogger(__name__)

# seq (odd while the held list is written), last beat, held list length, then the
# running task's start, timeout and entry ID (its length, then up to 60 bytes): written
# together, once per entry; then the held list.
HEADER = struct.Struct("<Qdi")
RUNNING = struct.Struct("<ddi60s")
BEAT = struct.Struct("<d")
LIST_AT = HEADER.size + RUNNING.size
SIZE = 1 << 20  # room for the IDs of a batch of ~40,000 entries
KILL_GRACE_S = 5.0  # past the task timeout, before a GIL-bound worker is killed


@dataclass(frozen=True, slots=True)
class Published:
    last_beat_s: float  # monotonic (shared by every process of the machine)
    task_started_s: float  # 0: no task running
    running: str  # the running task's entry ID, "" if none
    held: tuple[str, ...]  # every held entry ID, the running one included
    timeout_s: float = 0.0  # the running task's timeout (0: the keeper's default)


class Beacon:
    """Shared memory the worker writes and its keeper reads: the held entry IDs, the
    running task's start, the heartbeat's last success. Created before the fork."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, SIZE)  # anonymous, shared with a forked child
        self._seq = 0
        self.beat()

    def beat(self) -> None:
        BEAT.pack_into(self._map, 8, time.monotonic())

    def task(self, entry_id: str, started_s: float, timeout_s: float = 0.0) -> None:
        """The running task (once per entry: one small write, no lock). A torn read
        of the ID only makes the keeper renew that one claim once more."""
        raw = entry_id.encode()
        RUNNING.pack_into(self._map, HEADER.size, started_s, timeout_s, len(raw), raw)

    def held(self, entry_ids: Iterable[str]) -> None:
        """Publish the held IDs (once per batch; a seqlock: the reader retries a torn
        read)."""
        data = "\n".join(entry_ids).encode()[: SIZE - LIST_AT]
        self._seq += 1
        struct.pack_into("<Q", self._map, 0, self._seq)
        self._map[LIST_AT : LIST_AT + len(data)] = data
        struct.pack_into("<i", self._map, 16, len(data))
        self._seq += 1
        struct.pack_into("<Q", self._map, 0, self._seq)

    def read(self) -> Published:
        while True:
            seq, beat, length = HEADER.unpack_from(self._map, 0)
            data = self._map[LIST_AT : LIST_AT + length]
            if seq % 2 == 0 and HEADER.unpack_from(self._map, 0)[0] == seq:
                started, timeout_s, size, raw = RUNNING.unpack_from(
                    self._map, HEADER.size
                )
                held = tuple(data.decode().split("\n")) if length else ()
                running = raw[:size].decode()
                return Published(beat, started, running, held, timeout_s)


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP) or traced: /proc's state T or t."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return True


Renew = Callable[[list[str]], list[str]]


def start(beacon: Beacon, interval_s: float, timeout_s: float,
          renewer: Callable[[], Renew]) -> int:  # fmt: skip
    """Fork the keeper (before any thread or connection exists); returns its pid in
    the worker. The child builds its renewal (its own Redis client) with `renewer`,
    keeps until the worker is gone, and never returns."""
    worker_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _die_with_parent()
        keeper = Keeper(beacon, worker_pid, interval_s, timeout_s)
        renew = _lazily(renewer)
        while os.getppid() == worker_pid and keeper.step(renew):
            time.sleep(interval_s / 2)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group
        pass
    except BaseException:
        log.exception("keeper failed")
        code = 1
    finally:
        os._exit(code)


def _lazily(renewer: Callable[[], Renew]) -> Renew:
    """Connect at the first renewal needed, and again after a failure."""
    made: list[Renew] = []

    def renew(entry_ids: list[str]) -> list[str]:
        if not made:
            made.append(renewer())
        try:
            return made[0](entry_ids)
        except FAILURES:
            made.clear()
            raise

    return renew


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Keeper:
    def __init__(
        self, beacon: Beacon, worker_pid: int, interval_s: float, timeout_s: float
    ) -> None:
        self.beacon, self.worker_pid = beacon, worker_pid
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._helping = False

    def step(self, renew: Renew) -> bool:
        """One look at the worker; False once it killed the worker."""
        if stopped(self.worker_pid):
            return True  # frozen: its entries must lapse, as without a keeper
        now, published = time.monotonic(), self.beacon.read()
        running_s = now - published.task_started_s if published.task_started_s else 0.0
        timeout_s = published.timeout_s or self.timeout_s
        if running_s > timeout_s + KILL_GRACE_S:
            log.error("task held the worker past its timeout (a call that cannot be "
                      "interrupted holds the GIL): killing the worker", extra={
                          "running_s": round(running_s, 1), "timeout_s": timeout_s,
                          "entry_id": published.running})  # fmt: skip
            os.kill(self.worker_pid, signal.SIGKILL)
            return False
        if now - published.last_beat_s <= 1.5 * self.interval_s:
            self._helping = False
            return True  # the heartbeat thread runs: nothing to do
        self._renew(renew, published, running_s)
        return True

    def _renew(self, renew: Renew, published: Published, running_s: float) -> None:
        held = list(published.held)
        if running_s > (published.timeout_s or self.timeout_s):  # past it: lapses
            held = [entry_id for entry_id in held if entry_id != published.running]
        if not self._helping:
            facts = {"held": len(held)}
            log.warning("heartbeat overdue, worker running: renewing", extra=facts)
            self._helping = True
        with contextlib.suppress(*FAILURES):
            renew(held)
