"""When tasks run: now, after a countdown, at a time, and until when they may still
start (expiry). Checked here for HTTP (`countdown`, `run_at`, `expires_s`) and Python
(`send_with(countdown_s=..., run_at=..., expires_s=...)`) alike; the send script turns
it into due times by Redis's clock."""

import math
import time
from dataclasses import dataclass
from datetime import datetime

from redis.typing import EncodableT

MAX_COUNTDOWN_S = 30 * 86_400  # the default of MAX_COUNTDOWN_S: how far ahead at most


@dataclass(frozen=True, slots=True)
class Timing:
    """When tasks run: `at_ms` (a Unix time) or `in_ms` from now (Redis's clock), and
    how long after being due they may still start (`expires_ms`; 0: any time)."""

    in_ms: int = 0
    at_ms: int | None = None
    expires_ms: int = 0

    def args(self) -> list[EncodableT]:
        if self.at_ms is not None:
            return ["at", self.at_ms, self.expires_ms]
        return ["in" if self.in_ms else "now", self.in_ms, self.expires_ms]

    @property
    def plain(self) -> bool:
        """Due now and never expiring: a plain XADD does."""
        return self.at_ms is None and not self.in_ms and not self.expires_ms


NOW = Timing()


class TimingError(ValueError):
    """countdown / run_at / expires_s break a rule; `field` names which."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field} {rule}")
        self.field, self.rule = field, rule


def make_timing(
    countdown_s: float | None = None,
    run_at: float | datetime | None = None,
    expires_s: float | None = None,
    max_countdown_s: float = MAX_COUNTDOWN_S,
) -> Timing:
    """When to run: `countdown_s` from now, or at `run_at` (Unix seconds or an aware
    datetime; in the past: now), not both; at most `max_countdown_s` ahead."""
    if countdown_s is not None and run_at is not None:
        raise TimingError("countdown", "cannot go with run_at: give one of them")
    expires_ms = _expires_ms(expires_s, max_countdown_s)
    if countdown_s is not None:
        if not _number(countdown_s) or not 0 <= countdown_s <= max_countdown_s:
            rule = f"must be seconds from 0 to {max_countdown_s:g} (MAX_COUNTDOWN_S)"
            raise TimingError("countdown", rule)
        return Timing(in_ms=math.ceil(countdown_s * 1000), expires_ms=expires_ms)
    if run_at is not None:
        return Timing(at_ms=_at_ms(run_at, max_countdown_s), expires_ms=expires_ms)
    return Timing(expires_ms=expires_ms)


def _expires_ms(expires_s: float | None, max_countdown_s: float) -> int:
    if expires_s is None:
        return 0
    if not _number(expires_s) or not 0 < expires_s <= max_countdown_s:
        raise TimingError(
            "expires_s", f"must be seconds > 0, up to {max_countdown_s:g}"
        )
    return math.ceil(expires_s * 1000)


def _at_ms(run_at: float | datetime, max_countdown_s: float) -> int:
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise TimingError("run_at", "must carry its time zone (an aware datetime)")
        run_at = run_at.timestamp()
    if not _number(run_at) or run_at > time.time() + max_countdown_s:
        rule = f"must be a time at most {max_countdown_s:g} s ahead (MAX_COUNTDOWN_S)"
        raise TimingError("run_at", rule)
    return math.floor(run_at * 1000)


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
