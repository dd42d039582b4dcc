"""Each tenant's tokens and cost in the current UTC day and month, in memory, so the
budget check on every request is a dict lookup and no I/O.

Loaded from the ledger file at start (:meth:`Totals.load`), so budgets survive a
restart; added to by every finished request; emptied when the day (or month) turns.
The clock is passed in, so tests can cross midnight and month ends.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.ledger.budgets import NOTHING, Used
from hub.ledger.windows import Windows


class Totals:
    def __init__(self, now: float) -> None:
        self.windows = Windows.at(now)
        self.daily: dict[str, Used] = {}
        self.monthly: dict[str, Used] = {}

    def roll(self, now: float) -> Windows:
        """The windows ``now`` falls in; drops totals of windows that ended."""
        w = self.windows
        if w.contains(now):
            return w
        new = Windows.at(now)
        if new.day != w.day:
            self.daily = {}
        if new.month != w.month:
            self.monthly = {}
        self.windows = new
        return new

    def load(self, now: float, daily: Mapping[str, Used], monthly: Mapping[str, Used]) -> None:
        """Start from what the ledger file holds for the windows of ``now`` (called
        before the hub takes requests)."""
        self.roll(now)
        self.daily = dict(daily)
        self.monthly = dict(monthly)

    def add(self, tenant: str, tokens: int, cost: float, now: float) -> None:
        self.roll(now)
        for mine in (self.daily, self.monthly):
            have = mine.get(tenant, NOTHING)
            mine[tenant] = Used(have.tokens + tokens, have.cost + cost)

    def used(self, tenant: str, now: float) -> tuple[Used, Used]:
        """The tenant's (daily, monthly) usage."""
        self.roll(now)
        return self.daily.get(tenant, NOTHING), self.monthly.get(tenant, NOTHING)

    def tenants(self) -> set[str]:
        return set(self.monthly) | set(self.daily)
