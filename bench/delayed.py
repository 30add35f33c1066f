"""Delayed tasks against consumers with default settings (their clock threads promote
what is due every CLOCK_INTERVAL_MS): how fast a crowd of tasks due at one instant is
moved onto the stream, and how late tasks due at a steady 1,000 a second start. Both
clocks start at the due time, never at the send: the sends end before it."""

import time
from pathlib import Path

import redis

from bench import drain
from harness.processes import wait_for
from pipeline_core.delayed import delayed_key
from pipeline_core.keys import Queue
from pipeline_core.redis_settings import RedisSettings
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.timing import make_timing

CONSUMERS = 2  # as the drains
CHUNK = 1000  # tasks per send_many
SLOT_S = 0.1  # the lateness load: one send_many per 100 ms of due times
PER_SECOND = 1000
# The sends' lead: the first due time is LEAD_S plus the tasks at SEND_RATE after the
# first send (send_many of delayed tasks ran at about 23,000/s on the 2-core machine).
LEAD_S = 1.0
SEND_RATE = 10_000


def promotion(
    url: str, client: redis.Redis, count: int, log_dir: Path
) -> dict[str, float]:
    """`count` no-op tasks all due at one instant, idle consumers: tasks per second
    from the due time until the delayed set is empty (ZCARD polled every 2 ms), and
    until the group has run and acknowledged them all."""
    drain.fresh_group(client)
    with drain.consumers(url, CONSUMERS, log_dir):
        wait_for(lambda: drain.waiting(client, CONSUMERS), timeout_s=60, every_s=0.05)
        due_s = time.time() + LEAD_S + count / SEND_RATE
        nothing: dict[str, float] = {}  # bench.noop's payload
        _send(url, [(due_s, [nothing] * count)], "bench.noop")
        key = delayed_key(Queue())
        wait_for(lambda: client.zcard(key) == 0, timeout_s=600, every_s=0.002)
        promoted_s = time.time() - due_s
        wait_for(lambda: drain.finished(client, count), timeout_s=600, every_s=0.005)
        done_s = time.time() - due_s
    return {"promotion": count / promoted_s, "promotion drain": count / done_s}


def lateness(
    url: str, client: redis.Redis, seconds: float, log_dir: Path
) -> list[float]:
    """Tasks due at PER_SECOND for `seconds` (a send_many per SLOT_S of due times, all
    sent before the first is due), idle consumers: seconds from each task's due time
    to its start (the task notes it)."""
    drain.fresh_group(client)
    stamps = log_dir / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    slots = round(seconds / SLOT_S)
    per_slot = round(PER_SECOND * SLOT_S)
    with drain.consumers(url, CONSUMERS, log_dir, BENCH_STAMP_DIR=str(stamps)):
        wait_for(lambda: drain.waiting(client, CONSUMERS), timeout_s=60, every_s=0.05)
        first_s = time.time() + LEAD_S + slots * per_slot / SEND_RATE
        batches = []
        for slot in range(slots):
            due_s = first_s + slot * SLOT_S
            batches.append((due_s, [{"due": due_s}] * per_slot))
        _send(url, batches, "bench.due")
        total = slots * per_slot
        wait_for(lambda: drain.finished(client, total), timeout_s=120, every_s=0.05)
    return [
        float(line.split()[1])
        for path in stamps.glob("*.starts")
        for line in path.read_text().splitlines()
    ]


def _send(
    url: str, batches: list[tuple[float, list[dict[str, float]]]], task: str
) -> None:
    """Each batch's payloads, due at its time, CHUNK per send_many; raises if the
    sends ended less than 10 ms before the first due time (the clock starts there)."""
    settings = SenderSettings(redis=RedisSettings(url=url))
    sender = Sender(settings)
    try:
        for due_s, payloads in batches:
            timing = make_timing(run_at=due_s)
            for first in range(0, len(payloads), CHUNK):
                sender.send_many(task, payloads[first : first + CHUNK], timing=timing)
    finally:
        sender.close()
    late_s = time.time() - min(due_s for due_s, _ in batches)
    if late_s > -0.01:
        raise RuntimeError(
            f"the sends outlasted their lead: {late_s:.3f} s past the first due time"
        )
