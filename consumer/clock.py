"""The clock thread: every CLOCK_INTERVAL_MS it moves due delayed tasks and retries onto
the stream (pipeline_core/delayed.py) and ticks this consumer's periodic tasks
(pipeline_core/schedules.py). A thread because the worker loop may be blocked in a read
or busy with a long task when something falls due. Every consumer runs one: the scripts
make each move and each tick happen once, whoever runs them.
"""

import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from consumer.background import background
from consumer.settings import Settings
from consumer.tasks import options_of
from pipeline_core import delayed, schedules
from pipeline_core.connection import Client, redis_now_ms
from pipeline_core.replies import FAILURES
from pipeline_core.wire import encode_entry

log = logging.getLogger(__name__)


class Clock:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        tasks: Mapping[str, Callable[..., Any]],
    ) -> None:
        self.client, self.settings = client, settings
        self.periodic = {
            name: options_of(function)
            for name, function in tasks.items()
            if options_of(function).periodic
        }
        self._promote = delayed.promote_script(client)
        self._tick = schedules.tick_script(client)
        self._stop = threading.Event()

    def running(self) -> AbstractContextManager[None]:
        """The thread runs for the duration of the block."""
        return background(self._run, "clock", self._stop)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.settings.clock_interval_ms / 1000):
            try:
                self.tick()
                failing = False
            except FAILURES:
                if not failing:  # the worker loop reports the outage too
                    log.warning("clock: redis unavailable", exc_info=True)
                failing = True

    def tick(self) -> int:
        """Promote what is due (batch after batch while full), then tick schedules;
        how many delayed tasks were promoted."""
        q, ttl_s = self.settings.queue, self.settings.result_ttl_s
        promoted = moved = delayed.promote(self._promote, q, ttl_s)
        while moved >= delayed.PROMOTE_BATCH:
            moved = delayed.promote(self._promote, q, ttl_s)
            promoted += moved
        if self.periodic:
            self.tick_schedules()
        return promoted

    def tick_schedules(self) -> None:
        """Enqueue each periodic task's tick that is due, once across consumers."""
        q = self.settings.queue
        names = sorted(self.periodic)
        now_ms = redis_now_ms(self.client, q)
        for name, current in zip(
            names, schedules.next_ticks(self.client, q, names), strict=True
        ):
            if current is not None and current > now_ms:
                continue
            following = self.periodic[name].next_tick_ms(now_ms)
            fields = [
                item for pair in encode_entry(name, "{}").items() for item in pair
            ]
            written = schedules.tick(self._tick, q, name, (current, following), fields)
            if written:
                facts = {"task": name, "entry_id": written, "tick_ms": current,
                         "next_tick_ms": following}  # fmt: skip
                log.info("periodic task enqueued", extra=facts)
