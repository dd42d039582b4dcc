"""Retry budget: retries may add at most ``ratio`` extra load, plus a small floor.

Per-attempt retry limits multiply under an outage (every request retries ``max_attempts``
times at once); a budget caps retries as a share of recent traffic instead, as in
Finagle's and Linkerd's retry budgets. Over the last ``window_s`` seconds::

    allowed retries = ratio * requests + min_per_s * window_s

``deposit()`` once per client request (not per attempt); ``try_withdraw()`` before each
retry or failover attempt, and skip the retry when it answers False.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hub.config.kit import ConfigError, Section

Clock = Callable[[], float]
_EPSILON = 1e-9  # keeps 0.2 * 5 requests worth exactly one retry despite float rounding


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    ratio: float = 0.2
    min_per_s: float = 1.0
    window_s: float = 10.0


class RetryBudget:
    def __init__(self, cfg: RetryBudgetConfig, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._deposits: deque[float] = deque()
        self._withdrawals: deque[float] = deque()

    def deposit(self) -> None:
        """Count one client request; it earns ``ratio`` of a retry for ``window_s``."""
        now = self._clock()
        self._expire(now)
        self._deposits.append(now)

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget has one; False means: do not retry."""
        now = self._clock()
        self._expire(now)
        if self._balance() < 1.0 - _EPSILON:
            return False
        self._withdrawals.append(now)
        return True

    @property
    def balance(self) -> float:
        """Retries still available in the current window."""
        self._expire(self._clock())
        return self._balance()

    def snapshot(self) -> dict[str, object]:
        self._expire(self._clock())
        return {"balance": round(self._balance(), 3), "requests": len(self._deposits),
                "retries": len(self._withdrawals)}

    def _balance(self) -> float:
        cfg = self.cfg
        earned = cfg.ratio * len(self._deposits) + cfg.min_per_s * cfg.window_s
        return earned - len(self._withdrawals)

    def _expire(self, now: float) -> None:
        horizon = now - self.cfg.window_s
        for q in (self._deposits, self._withdrawals):
            while q and q[0] <= horizon:
                q.popleft()

    def __repr__(self) -> str:
        self._expire(self._clock())
        return (f"<RetryBudget ratio={self.cfg.ratio:g} balance={self._balance():.1f} "
                f"requests={len(self._deposits)} retries={len(self._withdrawals)}>")


def parse_retry_budget(raw: object, path: str) -> RetryBudgetConfig:
    """Parse the ``retry_budget`` mapping (None means all defaults); errors name the key."""

    s = Section(raw, path)
    d = RetryBudgetConfig()
    cfg = RetryBudgetConfig(
        ratio=s.number("ratio", d.ratio, exclusive_lo=False),
        min_per_s=s.number("min_per_s", d.min_per_s, exclusive_lo=False),
        window_s=s.number("window_s", d.window_s),
    )
    s.done()
    if cfg.ratio > 1.0:  # most likely a percentage: "20" meant 0.2
        prefix = f"{path}." if path else ""
        raise ConfigError(f"{prefix}ratio: must be <= 1, got {cfg.ratio}")
    return cfg
