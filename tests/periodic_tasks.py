"""A periodic task, for tests/test_time.py (its own module: loaded only where a test
wants ticks)."""

import time

from consumer import task
from tests.time_tasks import record


@task(every_s=1)
def every_second() -> None:
    record("every_second", repr(time.time()))
