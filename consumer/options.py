"""A task's options, given to `@task(...)`: its retry policy, its hard timeout and its
schedule (periodic tasks). Unset options take the settings' defaults."""

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter

from consumer.errors import TaskModuleError, UnrecoverableError
from consumer.settings import Settings


@dataclass(frozen=True, slots=True)
class TaskOptions:
    max_retries: int | None = None  # None: MAX_DELIVERIES - 1 (attempts in all)
    backoff_s: float | None = None  # None: RETRY_BACKOFF_S
    backoff_max_s: float | None = None  # None: RETRY_BACKOFF_MAX_S
    retry_on: tuple[type[BaseException], ...] | None = None  # None: any Exception
    timeout_s: float | None = None  # None: TASK_TIMEOUT_S
    every_s: float | None = None  # periodic: every this many seconds
    cron: str | None = None  # periodic: on this cron schedule (UTC)

    def check(self, name: str) -> None:
        """Refuse options that cannot work, naming the task (at import time)."""
        if self.max_retries is not None and self.max_retries < 0:
            raise TaskModuleError(f"task {name!r}: max_retries must be >= 0")
        for option, value in (("backoff_s", self.backoff_s),
                              ("backoff_max_s", self.backoff_max_s),
                              ("timeout_s", self.timeout_s),
                              ("every_s", self.every_s)):  # fmt: skip
            if value is not None and not (math.isfinite(value) and value > 0):
                raise TaskModuleError(f"task {name!r}: {option} must be > 0 seconds")
        if self.every_s is not None and self.cron is not None:
            raise TaskModuleError(f"task {name!r}: give every_s or cron, not both")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise TaskModuleError(f"task {name!r}: cron {self.cron!r} is not valid")

    @property
    def periodic(self) -> bool:
        return self.every_s is not None or self.cron is not None

    def attempts(self, settings: Settings) -> int:
        """Attempts in all, the first included."""
        if self.max_retries is None:
            return settings.max_deliveries
        return self.max_retries + 1

    def retryable(self, error: BaseException) -> bool:
        if isinstance(error, UnrecoverableError):
            return False
        return self.retry_on is None or isinstance(error, self.retry_on)

    def backoff_s_for(self, settings: Settings, retry: int) -> float:
        """The wait before the `retry`-th retry (1-based): B * 2^(retry-1), capped,
        with +-10 % jitter so failures in step do not retry in step."""
        base = settings.retry_backoff_s if self.backoff_s is None else self.backoff_s
        cap = (
            settings.retry_backoff_max_s
            if self.backoff_max_s is None
            else self.backoff_max_s
        )
        wait: float = min(cap, base * 2.0 ** (retry - 1))
        return wait * random.uniform(0.9, 1.1)

    def timeout(self, settings: Settings) -> float:
        return settings.task_timeout_s if self.timeout_s is None else self.timeout_s

    def next_tick_ms(self, after_ms: int) -> int:
        """A periodic task's first tick after `after_ms` (Unix ms)."""
        if self.every_s is not None:
            period = max(1, round(self.every_s * 1000))
            return (after_ms // period + 1) * period  # aligned to the period
        start = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
        return math.ceil(croniter(self.cron or "", start).get_next(float) * 1000)
