"""Token budgets judged on the whole fleet's usage: every hub adds what it records to
counters in Redis and reads the fleet's totals back, so a tenant's budget holds across
the hubs combined rather than once per hub.

Counters: a hash ``{tokens, cost}`` per tenant and window,
``<namespace>:budget:{<tenant>}:day:<YYYY-MM-DD>`` and ``...:month:<YYYY-MM>`` (UTC, as
:mod:`hub.ledger.windows`), expiring a day after their window ends. Every ``every_s``
(``state.budget_sync_s``, 0.5 s) one pipeline, off the request path, sends the usage
this hub recorded since the last one (``HINCRBY``/``HINCRBYFLOAT``) and then reads the
totals of every budgeted tenant (``HMGET``); a budget check stays a dict lookup.

How the totals combine (:meth:`SharedBudgets.combine`): a tenant's usage is, per
window and kind, the larger of this hub's own totals (its ledger file plus what it
served) and the fleet's totals from the last read plus what this hub recorded after
that read was sent. So a lost or emptied Redis never makes a hub laxer than alone.

Overrun: another hub's usage reaches this hub's checks within about two sync
intervals (its flush, then this hub's read), so beyond a limit the fleet serves at most
what the tenant's requests cost across all hubs in ~2 x ``budget_sync_s``, plus the
requests already running (as in one hub: the request that crosses a limit is served).

Outage: nothing is sent or read while the link is down; budgets are judged on this
hub's totals and the last fleet totals plus what this hub recorded since. A batch that
failed is kept and sent again after the resync (at least once: if Redis applied it but
the answer was lost, it is counted twice, so the error is on the strict side). Usage
recorded by other hubs while this hub was cut off reaches it at the next read. Lost:
usage sent to a Redis that then restarted empty (the counters are not persisted); each
hub's own ledger file still bounds what it judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric

from hub.ledger.budgets import Used
from hub.ledger.windows import DAY, Windows
from hub.state.background import Ticker
from hub.state.redis_link import LINK_ERRORS

if TYPE_CHECKING:
    from hub.ledger.ledger import Ledger
    from hub.state.link import SharedLink

log = logging.getLogger("spokehub.budget")
MAX_WANTED = 100_000  # default-budget tenants learned from checks; cleared beyond this

_Key = tuple[str, Windows]


def _plus(used: Used, extra: list[float] | None) -> Used:
    return used if extra is None else Used(used.tokens + int(extra[0]), used.cost + extra[1])


def _larger(a: Used, b: Used) -> Used:
    return Used(max(a.tokens, b.tokens), max(a.cost, b.cost))


def _add(table: dict[_Key, list[float]], key: _Key, tokens: float, cost: float) -> None:
    have = table.get(key)
    if have is None:
        table[key] = [tokens, cost]
    else:
        have[0] += tokens
        have[1] += cost


class SharedBudgets:
    """The :class:`hub.ledger.ledger.FleetView` of a hub sharing its budgets."""

    def __init__(self, link: SharedLink, ledger: Ledger, *,
                 every_s: Callable[[], float] = lambda: 0.5,
                 enabled: Callable[[], bool] = lambda: True,
                 timeout_s: float = 1.0) -> None:
        self.link = link
        self.ledger = ledger
        self.every_s = every_s  # read each round: a reload may change them
        self.enabled = enabled
        self.timeout_s = timeout_s
        self.pending: dict[_Key, list[float]] = {}  # recorded, not sent yet
        self.since_read: dict[_Key, list[float]] = {}  # recorded after the last read went
        self.fleet: dict[str, tuple[Windows, Used, Used]] = {}  # the last read
        self.wanted: set[str] = set()  # default-budget tenants checked here
        self.syncs = 0
        self.failures = 0
        self._expiring: set[str] = set()  # counters given their expiry since the resync
        self._ticker = Ticker(self.sync, every_s, "shared budgets", handled=LINK_ERRORS)

    # -- the FleetView interface (sync, on the request path) ---------------------------
    def add(self, tenant: str, tokens: int, cost: float, windows: Windows) -> None:
        if (not tokens and not cost) or not self.enabled():
            return
        key = (tenant, windows)
        _add(self.pending, key, tokens, cost)
        _add(self.since_read, key, tokens, cost)

    def combine(self, tenant: str, windows: Windows, daily: Used,
                monthly: Used) -> tuple[Used, Used]:
        known = self.fleet.get(tenant)
        if known is None or known[0] != windows or not self.enabled():
            if known is None and tenant not in self.ledger.budgets.tenants:
                if len(self.wanted) >= MAX_WANTED:
                    self.wanted.clear()
                self.wanted.add(tenant)  # read its fleet totals from the next round on
            return daily, monthly
        extra = self.since_read.get((tenant, windows))
        return (_larger(daily, _plus(known[1], extra)),
                _larger(monthly, _plus(known[2], extra)))

    # -- the sync loop -----------------------------------------------------------------
    def start(self) -> None:
        self.link.on_resync(self._resynced)  # back (or first connected): sync at once
        self._ticker.start()

    def _resynced(self) -> None:
        self._expiring.clear()  # a Redis that restarted has lost them
        self._ticker.kick()

    async def aclose(self) -> None:
        await self._ticker.aclose()
        if self.link.up and self.pending:  # a clean stop sends what it has
            with contextlib.suppress(*LINK_ERRORS):
                await self.sync()

    def _keys(self, tenant: str, w: Windows) -> tuple[tuple[str, int], tuple[str, int]]:
        """(key, expires at) of the tenant's day and month counters."""
        t = f"{{{tenant}}}"
        return ((self.link.key("budget", t, "day", w.label("daily")), w.day_end + DAY),
                (self.link.key("budget", t, "month", w.label("monthly")), w.month_end + DAY))

    def _to_read(self) -> list[str]:
        budgets = self.ledger.budgets
        names = {name for name, b in budgets.tenants.items() if not b.unlimited}
        if not budgets.default.unlimited:
            names |= self.ledger.totals.tenants() | self.wanted
            names |= {tenant for tenant, _ in self.pending}
        return sorted(n for n in names if not budgets.for_tenant(n).unlimited)

    async def sync(self) -> None:
        """Send this hub's usage since the last sync and read the fleet's totals, in one
        pipeline. Raises the link's errors after marking it down (the batch is kept)."""
        if not self.enabled() or not self.link.up:
            return
        ledger = self.ledger
        windows = ledger.totals.roll(ledger.clock())
        batch, self.pending = self.pending, {}
        tenants = self._to_read()
        pipe = self.link.client.pipeline(transaction=False)
        expiring: list[str] = []
        for (tenant, w), (tokens, cost) in batch.items():
            for key, expires in self._keys(tenant, w):
                if tokens:
                    pipe.hincrby(key, "tokens", int(tokens))
                if cost:
                    pipe.hincrbyfloat(key, "cost", cost)
                if key not in self._expiring:
                    pipe.expireat(key, expires)
                    expiring.append(key)
        for tenant in tenants:
            for key, _ in self._keys(tenant, windows):
                pipe.hmget(key, ["tokens", "cost"])
        since, self.since_read = self.since_read, {}  # what is recorded from now on
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await pipe.execute()
        except LINK_ERRORS as exc:
            for again, (tokens, cost) in batch.items():  # send again after the resync
                _add(self.pending, again, tokens, cost)
            for back, (tokens, cost) in since.items():
                _add(self.since_read, back, tokens, cost)
            self.failures += 1
            self.link.mark_down(exc)
            raise
        if len(self._expiring) > MAX_WANTED:
            self._expiring.clear()
        self._expiring.update(expiring)
        reads = results[len(results) - 2 * len(tenants):] if tenants else []
        fleet: dict[str, tuple[Windows, Used, Used]] = {}
        for i, tenant in enumerate(tenants):
            fleet[tenant] = (windows, _used(reads[2 * i]), _used(reads[2 * i + 1]))
        self.fleet = fleet
        self.syncs += 1
        ledger.fleet_changed()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("spokehub_shared_budget_syncs",
                                  "Rounds that sent this hub's usage to Redis and read the "
                                  "fleet's budget totals back", value=float(self.syncs))
        yield CounterMetricFamily("spokehub_shared_budget_sync_failures",
                                  "Budget sync rounds that failed (Redis out): budgets are "
                                  "judged on this hub's totals until it is back",
                                  value=float(self.failures))


def _used(raw: object) -> Used:
    """A ``[tokens, cost]`` HMGET reply (None for a missing field)."""
    if not isinstance(raw, list) or len(raw) != 2:
        return Used()
    tokens, cost = raw
    try:
        return Used(int(tokens) if tokens is not None else 0,
                    float(cost) if cost is not None else 0.0)
    except ValueError:
        return Used()
