"""The ledger as the request path sees it: record a finished request, check a tenant's
budget before forwarding, tell the spill-over whether a tenant may spill, and answer
the admin API's queries.

Everything here runs on the event loop and does no I/O: :meth:`Ledger.record` updates
in-memory totals and hands a row to the writer thread; :meth:`Ledger.check` reads the
totals. A request without token counts (the worker reported none) is counted as a
request with 0 tokens and 0 cost, and as ``unreported``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from hub.errors import HubError
from hub.forward.call import Call
from hub.ledger.budgets import OK, Budget, BudgetsConfig, State, Used, Verdict, judge
from hub.ledger.config import LedgerConfig
from hub.ledger.prices import Prices
from hub.ledger.query import UsageQuery
from hub.ledger.store import Store
from hub.ledger.totals import Totals
from hub.ledger.windows import Windows, hour_start
from hub.ledger.writer import Writer

log = logging.getLogger("spokehub.budget")
STOP_TIMEOUT_S = 30.0
_MAX_ANNOUNCED = 100_000  # log-once memory; cleared (and repeated) beyond this


def _amount(kind: str | None, value: float) -> str:
    return f"{int(value)}" if kind == "tokens" else f"{value:.6g}"


class FleetView(Protocol):
    """Usage of the other hubs of a fleet (:class:`hub.state.shared_budgets.SharedBudgets`):
    told what this hub records, asked for a tenant's totals to judge."""

    def add(self, tenant: str, tokens: int, cost: float, windows: Windows) -> None: ...

    def combine(self, tenant: str, windows: Windows, daily: Used,
                monthly: Used) -> tuple[Used, Used]: ...


class InsufficientQuota(HubError):
    """A tenant's hard budget is spent and its budget says ``on_hard: reject``."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class Ledger:
    def __init__(self, prices: Prices, config: LedgerConfig, budgets: BudgetsConfig, *,
                 clock: Callable[[], float] = time.time,
                 env: Mapping[str, str] | None = None,
                 tenant_label: Callable[[str], str] = lambda tenant: tenant) -> None:
        self.prices = prices
        self.config = config
        self.budgets = budgets
        self.clock = clock
        self.path = config.resolve_path(env)
        self.writer = Writer(self.path, flush_interval_s=config.flush_interval_s,
                             flush_rows=config.flush_rows,
                             retention_days=config.retention_days, clock=clock)
        self.totals = Totals(clock())
        self.tenant_label = tenant_label  # bounded metric labels (metrics.max_tenants)
        self.costs: dict[tuple[str, str, str], float] = {}  # (tenant label, model, tier)
        self._announced: set[tuple[str, str, int, State]] = set()
        # Verdicts by tenant for the windows they were judged in: a check is a lookup.
        self._verdicts: dict[str, Verdict] = {}
        self._judged_in: Windows | None = None
        # While a refresh reads the file: what this process recorded since it asked.
        self._since_refresh: dict[str, list[float]] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.fleet: FleetView | None = None  # set when hubs share their budgets (Redis)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file (in the writer thread) and load this day's and month's totals."""
        await asyncio.wrap_future(self.writer.start())
        now = self.clock()
        w = Windows.at(now)

        def load(store: Store) -> tuple[dict[str, Used], dict[str, Used]]:
            return store.totals_since(w.day), store.totals_since(w.month)

        daily, monthly = await asyncio.wrap_future(self.writer.call(load))
        self.totals.load(now, daily, monthly)
        self._verdicts.clear()
        log.info("ledger at %s: %d tenants have usage this month", self.path, len(monthly))
        if self.config.refresh_s > 0:
            self._refresher = asyncio.create_task(self._refresh_loop(self.config.refresh_s),
                                                  name="spokehub-ledger-refresh")

    async def stop(self) -> None:
        """Commit what is queued and close the file."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await asyncio.to_thread(self.writer.stop, STOP_TIMEOUT_S)

    async def refresh(self) -> bool:
        """Re-read this day's and month's totals from the file, which other hub
        processes may add to; what this process recorded meanwhile is kept on top.
        False if the day turned while reading (the next refresh will do)."""
        now = self.clock()
        w = self.totals.roll(now)
        # The read runs after every row recorded so far is committed; rows recorded
        # from here on are not in it, so they are counted aside and added back.
        since: dict[str, list[float]] = {}
        self._since_refresh = since

        def load(store: Store) -> tuple[dict[str, Used], dict[str, Used]]:
            return store.totals_since(w.day), store.totals_since(w.month)

        try:
            daily, monthly = await asyncio.wrap_future(self.writer.call(load))
        finally:
            self._since_refresh = None
        if self.totals.roll(self.clock()) is not w:
            return False
        for tenant, (tokens, cost) in since.items():
            for table in (daily, monthly):
                have = table.get(tenant, Used())
                table[tenant] = Used(have.tokens + int(tokens), have.cost + cost)
        self.totals.load(now, daily, monthly)
        self._verdicts.clear()
        return True

    async def _refresh_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except (RuntimeError, sqlite3.Error) as exc:
                log.error("ledger: re-reading totals from %s failed: %s", self.path, exc)

    def configure(self, prices: Prices, config: LedgerConfig, budgets: BudgetsConfig) -> None:
        """A reload: new prices apply to requests that finish from now on, new budgets
        to the next check. The file and the write batching stay as they started."""
        self.prices = prices
        self.budgets = budgets
        self.config = config
        self._verdicts.clear()

    # -- the request path --------------------------------------------------------------------

    def record(self, call: Call) -> None:
        """Account one finished request: one with token counts, or a whole answer from
        a worker that reported none. Failed requests, and answers no worker made (a
        response-cache hit), spent nothing and are not recorded."""
        usage = call.usage
        if usage is None and (not call.answered or call.worker is None):
            return
        now = self.clock()
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage \
            else (0, 0)
        cost = self.prices.cost(call.model, call.tier, prompt, completion)
        tenant = call.tenant
        self.writer.put((hour_start(now), tenant, call.model, call.tier),
                        [1, prompt, completion, cost, 0 if usage else 1])
        self.totals.add(tenant, prompt + completion, cost, now)
        if self.fleet is not None:
            self.fleet.add(tenant, prompt + completion, cost, self.totals.windows)
        since = self._since_refresh
        if since is not None:
            aside = since.get(tenant)
            if aside is None:
                since[tenant] = [prompt + completion, cost]
            else:
                aside[0] += prompt + completion
                aside[1] += cost
        if cost:
            key = (self.tenant_label(tenant), call.model, call.tier)
            self.costs[key] = self.costs.get(key, 0.0) + cost
        self._verdicts.pop(tenant, None)
        budget = self.budgets.for_tenant(tenant)
        if not budget.unlimited:
            self._announce(tenant, budget, self._verdict(tenant, budget, now))

    def _verdict(self, tenant: str, budget: Budget, now: float) -> Verdict:
        windows = self.totals.roll(now)
        if windows is not self._judged_in:  # a new day: every verdict is stale
            self._verdicts.clear()
            self._judged_in = windows
        verdict = self._verdicts.get(tenant)
        if verdict is None:
            verdict = self._verdicts[tenant] = judge(budget, *self.used(tenant, now))
        return verdict

    def used(self, tenant: str, now: float) -> tuple[Used, Used]:
        """The tenant's (daily, monthly) usage budgets judge: this hub's totals, or the
        fleet's when hubs share them (never less than this hub's own)."""
        daily, monthly = self.totals.used(tenant, now)
        fleet = self.fleet
        if fleet is None:
            return daily, monthly
        return fleet.combine(tenant, self.totals.windows, daily, monthly)

    def fleet_changed(self) -> None:
        """The fleet's totals were read again: judge every tenant afresh."""
        self._verdicts.clear()

    def verdict(self, tenant: str) -> Verdict:
        budget = self.budgets.for_tenant(tenant)
        if budget.unlimited:
            return OK
        return self._verdict(tenant, budget, self.clock())

    def check(self, tenant: str) -> None:
        """Before forwarding: raises InsufficientQuota (429) when the tenant's hard
        budget is spent and its budget says ``on_hard: reject``."""
        budget = self.budgets.for_tenant(tenant)
        if budget.unlimited or budget.on_hard != "reject":
            return
        now = self.clock()
        verdict = self._verdict(tenant, budget, now)
        if verdict.state is State.HARD:
            window = verdict.window or "monthly"
            retry = max(1, int(self.totals.windows.end(window) - now))
            raise InsufficientQuota(
                f"Tenant '{tenant}' has used its {window} {verdict.kind} budget; it resets "
                f"at the start of the next UTC {'day' if window == 'daily' else 'month'}",
                headers={"Retry-After": str(retry)})

    def spill_allowed(self, tenant: str) -> bool:
        """May this tenant's requests spill over to the fallback tier? Not once its hard
        budget is spent (``on_hard: no_spill``: local workers still serve it)."""
        budget = self.budgets.for_tenant(tenant)
        if budget.unlimited:
            return True
        return self._verdict(tenant, budget, self.clock()).state is not State.HARD

    def _announce(self, tenant: str, budget: Budget, verdict: Verdict) -> None:
        """Log once per tenant, window and state when a soft or hard limit is reached."""
        if verdict.state is State.OK or verdict.window is None:
            return
        w = self.totals.windows
        key = (tenant, verdict.window, w.day if verdict.window == "daily" else w.month,
               verdict.state)
        if key in self._announced:
            return
        if len(self._announced) >= _MAX_ANNOUNCED:
            self._announced.clear()
        self._announced.add(key)
        limit = next(v for win, kind, v in budget.limits()
                     if win == verdict.window and kind == verdict.kind)
        daily, monthly = self.used(tenant, self.clock())
        used = (daily if verdict.window == "daily" else monthly).of(verdict.kind or "tokens")
        soft = verdict.state is State.SOFT
        action = "logged only" if soft else (
            "requests get 429 insufficient_quota" if budget.on_hard == "reject"
            else "no spill-over to the fallback tier; local workers still serve")
        at = f", soft at {budget.soft_ratio:.0%}" if soft else ""
        text = (f"budget {'soft' if soft else 'hard'} limit reached: tenant {tenant}, "
                f"{verdict.window} {verdict.kind} {_amount(verdict.kind, used)} of "
                f"{_amount(verdict.kind, limit)}{at} ({action})")
        log.warning("%s", text, extra={"fields": {
            "msg": text, "tenant": tenant, "limit": "soft" if soft else "hard",
            "window": verdict.window, "period": w.label(verdict.window),
            "kind": verdict.kind, "used": used, "budget": limit,
            "soft_ratio": budget.soft_ratio, "on_hard": budget.on_hard}})

    # -- the admin API -----------------------------------------------------------------------

    async def query(self, q: UsageQuery) -> list[dict[str, Any]]:
        """Rows of usage, committed and queued alike."""
        return await asyncio.wrap_future(self.writer.call(lambda store: store.query(q)))

    def budget_status(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Each budgeted tenant's usage this UTC day and month against its limits."""
        now = self.clock()
        names = {tenant} if tenant is not None else \
            (self.totals.tenants() | set(self.budgets.tenants))
        out = []
        for name in sorted(names):
            budget = self.budgets.for_tenant(name)
            if budget.unlimited:
                continue
            daily, monthly = self.used(name, now)
            verdict = judge(budget, daily, monthly)
            w = self.totals.windows
            out.append({
                "tenant": name, "state": verdict.state.name.lower(),
                "window": verdict.window, "kind": verdict.kind, "on_hard": budget.on_hard,
                "soft_ratio": budget.soft_ratio,
                "daily": {"period": w.label("daily"), "tokens": daily.tokens,
                          "cost": daily.cost, "tokens_limit": budget.daily_tokens,
                          "cost_limit": budget.daily_cost},
                "monthly": {"period": w.label("monthly"), "tokens": monthly.tokens,
                            "cost": monthly.cost, "tokens_limit": budget.monthly_tokens,
                            "cost_limit": budget.monthly_cost}})
        return out
