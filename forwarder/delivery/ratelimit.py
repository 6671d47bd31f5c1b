"""A token bucket that paces delivery to a number of events per second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; thread-safe.

    `reserve(n)` takes n tokens at once and returns how long the caller must wait before
    using them (a request larger than the bucket runs it into debt, so any batch size
    still averages `rate`). Callers sleep on their own stop event, so shutdown is prompt.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = 0.0  # start empty: the first second is paced like the rest
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        """Take n tokens; seconds to wait before sending them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
