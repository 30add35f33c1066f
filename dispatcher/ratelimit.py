"""A per-client limit of attempts in a window, in-process: sign-ins to the console,
result and status lookups."""

import threading
import time
from collections.abc import Callable


class WindowLimiter:
    """At most `attempts` per client (an address, a token's fingerprint) in a window,
    counted in this process. When too many clients are being tracked, newcomers are
    refused until windows expire: a flood of clients never gets more attempts."""

    def __init__(
        self,
        attempts: int,
        window_s: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts, self.window_s, self.max_addresses = (
            attempts,
            window_s,
            max_addresses,
        )
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # address: (window start, count)
        self._lock = threading.Lock()

    def allow(self, address: str) -> bool:
        now = self.clock()
        with self._lock:
            start, count = self._seen.get(address, (now, 0))
            if now - start >= self.window_s:
                start, count = now, 0
            if address not in self._seen and len(self._seen) >= self.max_addresses:
                self._seen = {
                    a: w for a, w in self._seen.items() if now - w[0] < self.window_s
                }
                if len(self._seen) >= self.max_addresses:
                    return False
            self._seen[address] = (start, count + 1)
            return count < self.attempts
