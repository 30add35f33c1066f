"""The keeper's cost on the hot path (issue: GIL-bound tasks keep their claims, at what
price): what the worker writes for its keeper per task and per batch (consumer/keeper.py
Beacon: the running task per entry, the held list per batch), timed alone, beside the
whole per-task time of the 2-consumer drain measured in the same run."""

import time

from consumer.keeper import Beacon

BATCH = 500  # entries a read takes when tasks are tiny (the adaptive rule's cap)


def beacon_seconds_per_task(tasks: int) -> float:
    """Seconds the Beacon's writes take per task: held() once per batch of BATCH,
    task() once per entry, as the worker calls them."""
    beacon = Beacon()
    ids = [f"{1_700_000_000_000 + n}-0" for n in range(BATCH)]
    batches = max(1, tasks // BATCH)
    started = time.perf_counter()
    for _ in range(batches):
        beacon.held(ids)
        for entry_id in ids:
            beacon.task(entry_id, time.monotonic(), 600.0)
        beacon.beat()
    return (time.perf_counter() - started) / (batches * BATCH)
