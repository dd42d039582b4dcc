"""A token bucket: ``burst`` tokens at most, refilled at ``rate`` per second.

Pure and synchronous; time comes from an injected monotonic clock.

A request larger than ``burst`` is admitted once the bucket is full and leaves
it in debt, so a big request is never starved yet still pays in full. The
balance may also go negative through :meth:`reserve`, which books tokens now for
a caller that will wait until the balance is back to zero (FIFO queueing
without a queue).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate}")
        if not (math.isfinite(burst) and burst > 0):
            raise ValueError(f"burst must be a positive number, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = now
        return self._tokens

    @property
    def tokens(self) -> float:
        """Current balance (negative while in debt)."""
        return self._refill()

    @property
    def full(self) -> bool:
        return self._refill() >= self.burst

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens could be taken; 0.0 if now. Takes nothing."""
        need = min(n, self.burst)
        short = need - self._refill()
        return short / self.rate if short > 0 else 0.0

    def try_take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens and return 0.0, or take nothing and return the
        seconds until ``n`` tokens are available (for ``Retry-After``)."""
        wait = self.wait_time(n)
        if wait == 0.0:
            self._tokens -= n
        return wait

    def reserve(self, n: float = 1.0) -> float:
        """Take ``n`` tokens now, going into debt if needed, and return the seconds
        the caller must wait before proceeding (the same wait :meth:`try_take`
        would have reported). Later reservations queue behind earlier ones."""
        wait = self.wait_time(n)
        self._tokens -= n
        return wait

    def refund(self, n: float) -> None:
        """Give back tokens taken for work that did not happen (capped at burst)."""
        if n > 0:
            self._tokens = min(self.burst, self._refill() + n)
