"""The ledger on the request path, with an injected clock and a real SQLite file:
recording, budget checks (429 insufficient_quota), spill-over, restarts, soft-limit
logging."""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hub.error_shapes import error_for
from hub.forward.call import Call
from hub.ledger.budgets import Budget, BudgetsConfig, State, parse_budgets
from hub.ledger.config import LedgerConfig
from hub.ledger.ledger import InsufficientQuota, Ledger
from hub.ledger.prices import Prices, parse_prices
from hub.ledger.query import UsageQuery
from hub.observe.usage import Usage

NOW = float(calendar.timegm((2026, 11, 30, 22, 0, 0)))
PRICES = parse_prices({"tiny": {"input_per_1m": 1.0, "output_per_1m": 2.0,
                                "fallback": {"input_per_1m": 10.0, "output_per_1m": 20.0}}})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(tenant: str, prompt: int | None, completion: int = 0, *, tier: str = "local",
         model: str = "tiny", answered: bool = True) -> Call:
    c = Call(request_id="r", route="/chat/completions", model=model, tenant=tenant,
             tier=tier, answered=answered, worker="w0")
    c.usage = None if prompt is None else Usage(prompt, completion)
    return c


MakeLedger = Callable[..., Ledger]


@pytest.fixture
async def make_ledger(tmp_path: Path) -> AsyncIterator[MakeLedger]:
    made: list[Ledger] = []

    def make(budgets: BudgetsConfig | None = None, prices: Prices = PRICES,
             clock: Clock | None = None, name: str = "ledger.sqlite3") -> Ledger:
        ledger = Ledger(prices, LedgerConfig(str(tmp_path / name), flush_interval_s=60.0),
                        budgets or BudgetsConfig(), clock=clock or Clock(NOW), env={})
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        await ledger.stop()


async def test_sums_and_costs_by_tenant_model_tier(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    await ledger.start()
    ledger.record(call("acme", 1000, 500))
    ledger.record(call("acme", 2000, 100, tier="fallback"))
    ledger.record(call("beta", None))  # answered, but the worker said nothing
    ledger.record(call("beta", None, answered=False))  # failed: not a served request
    ledger.record(call("beta", 5, 5, model="unpriced"))
    hit = call("beta", None)
    hit.worker = None  # answered without a worker (a response-cache hit): nothing spent
    ledger.record(hit)
    rows = await ledger.query(UsageQuery(group_by=("tenant", "model", "tier")))
    got = {(r["tenant"], r["model"], r["tier"]): (r["requests"], r["prompt_tokens"],
                                                  r["completion_tokens"], r["unreported"])
           for r in rows}
    assert got == {("acme", "tiny", "local"): (1, 1000, 500, 0),
                   ("acme", "tiny", "fallback"): (1, 2000, 100, 0),
                   ("beta", "tiny", "local"): (1, 0, 0, 1),
                   ("beta", "unpriced", "local"): (1, 5, 5, 0)}
    cost = {(r["tenant"], r["tier"]): r["cost"] for r in rows if r["model"] == "tiny"}
    assert cost[("acme", "local")] == pytest.approx(0.002)  # 1000 * 1 + 500 * 2, per 1M
    assert cost[("acme", "fallback")] == pytest.approx(0.022)  # 2000 * 10 + 100 * 20
    assert ledger.costs == pytest.approx({("acme", "tiny", "local"): 0.002,
                                          ("acme", "tiny", "fallback"): 0.022})


async def test_budgets_survive_a_restart(make_ledger: MakeLedger) -> None:
    budgets = parse_budgets({"default": {"daily_tokens": 1000, "on_hard": "reject"}})
    first = make_ledger(budgets)
    await first.start()
    first.record(call("acme", 600, 400))
    assert first.verdict("acme").state is State.HARD
    await first.stop()
    second = make_ledger(budgets)
    await second.start()
    assert second.totals.used("acme", NOW)[0].tokens == 1000
    with pytest.raises(InsufficientQuota):
        second.check("acme")
    second.check("beta")  # another tenant is unaffected


async def test_a_restart_reloads_only_the_current_day_and_month(
        make_ledger: MakeLedger) -> None:
    def at(*when: int) -> Clock:
        return Clock(float(calendar.timegm((*when, 0, 0))))

    first = make_ledger(clock=at(2026, 11, 29, 22, 0))
    await first.start()
    first.record(call("acme", 100, 0))
    await first.stop()
    second = make_ledger(clock=at(2026, 11, 30, 1, 0))  # the next day, same month
    await second.start()
    daily, monthly = second.totals.used("acme", second.clock())
    assert (daily.tokens, monthly.tokens) == (0, 100)
    assert monthly.cost == pytest.approx(0.0001)
    second.record(call("acme", 10, 0))
    await second.stop()
    third = make_ledger(clock=at(2026, 12, 1, 0, 30))  # a new month
    await third.start()
    daily, monthly = third.totals.used("acme", third.clock())
    assert (daily.tokens, monthly.tokens) == (0, 0)
    rows = await third.query(UsageQuery(group_by=("day",)))
    assert [(r["day"], r["prompt_tokens"]) for r in rows] == [("2026-11-29", 100),
                                                              ("2026-11-30", 10)]


async def test_reject_answers_429_insufficient_quota_until_the_window_ends(
        make_ledger: MakeLedger) -> None:
    clock = Clock(NOW)
    ledger = make_ledger(parse_budgets({"tenants": {
        "acme": {"daily_cost": 0.001, "on_hard": "reject"}}}), clock=clock)
    await ledger.start()
    ledger.check("acme")
    ledger.record(call("acme", 1000, 0))  # 0.001: the limit is reached
    with pytest.raises(InsufficientQuota) as info:
        ledger.check("acme")
    err = info.value
    assert err.status == 429
    assert err.headers["Retry-After"] == str(2 * 3600)  # 22:00 -> midnight UTC
    body = json.loads(error_for("/v1/chat/completions", err).body)  # type: ignore[arg-type]
    assert body["error"]["type"] == "insufficient_quota"
    assert body["error"]["code"] == "insufficient_quota"
    anthropic = json.loads(error_for("/v1/messages", err).body)  # type: ignore[arg-type]
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "rate_limit_error"
    assert ledger.spill_allowed("acme") is False
    clock.now = NOW + 2 * 3600  # the next UTC day
    ledger.check("acme")
    assert ledger.spill_allowed("acme") is True


async def test_no_spill_keeps_serving_but_stops_spilling(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(parse_budgets({"default": {"monthly_tokens": 100}}))
    await ledger.start()
    assert ledger.spill_allowed("acme")
    ledger.record(call("acme", 50, 49))
    assert ledger.spill_allowed("acme")
    ledger.record(call("acme", 1, 0))
    assert not ledger.spill_allowed("acme")
    ledger.check("acme")  # no_spill never rejects
    assert ledger.spill_allowed("beta")
    ledger.configure(PRICES, ledger.config, BudgetsConfig())  # a reload lifts the budget
    assert ledger.spill_allowed("acme")


async def test_limits_are_logged_once_per_window(
        make_ledger: MakeLedger, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(NOW)
    ledger = make_ledger(BudgetsConfig(default=Budget(daily_tokens=100, soft_ratio=0.5)),
                         clock=clock)
    await ledger.start()
    with caplog.at_level(logging.WARNING, logger="spokehub.budget"):
        for _ in range(3):
            ledger.record(call("acme", 30, 0))  # 30, 60 (soft), 90
        ledger.record(call("acme", 30, 0))  # 120: hard
        ledger.record(call("acme", 30, 0))
        clock.now += 3 * 3600  # the next day: soft again, logged again
        ledger.record(call("acme", 60, 0))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("budget soft limit reached: tenant acme, daily tokens 60")
    assert lines[1].startswith("budget hard limit reached: tenant acme, daily tokens 120")
    assert "no spill-over" in lines[1]
    assert lines[2].startswith("budget soft limit reached")
    status = ledger.budget_status("acme")[0]
    assert status["state"] == "soft" and status["daily"]["tokens"] == 60
    assert status["daily"]["period"] == "2026-12-01"


async def test_in_memory_ledger_answers_queries(tmp_path: Path) -> None:
    ledger = Ledger(PRICES, LedgerConfig(), BudgetsConfig(), env={})
    assert ledger.path == ":memory:"
    await ledger.start()
    try:
        ledger.record(call("acme", 3, 4))
        rows = await ledger.query(UsageQuery(group_by=()))
        assert (rows[0]["requests"], rows[0]["total_tokens"]) == (1, 7)
    finally:
        await ledger.stop()


async def test_processes_sharing_a_file_see_each_others_usage(tmp_path: Path) -> None:
    budgets = parse_budgets({"default": {"daily_tokens": 100, "on_hard": "reject"}})
    path = str(tmp_path / "shared.sqlite3")
    a, b = (Ledger(PRICES, LedgerConfig(path, flush_interval_s=0.05), budgets,
                   clock=Clock(NOW), env={}) for _ in range(2))
    await a.start()
    await b.start()
    try:
        a.record(call("acme", 40, 20))
        await a.query(UsageQuery())  # committed to the shared file
        b.record(call("acme", 10, 0))
        b.check("acme")  # b alone has seen 10 of 100
        assert await b.refresh()
        assert b.totals.used("acme", NOW)[0].tokens == 70  # a's 60 and its own 10
        b.record(call("acme", 30, 0))
        with pytest.raises(InsufficientQuota):
            b.check("acme")
        # a refresh counts what was recorded while it read, once
        a.record(call("beta", 1, 1))
        refreshing = asyncio.ensure_future(a.refresh())
        await asyncio.sleep(0)  # the read is asked for ...
        a.record(call("beta", 5, 0))  # ... and this comes after it
        assert await refreshing
        assert a.totals.used("beta", NOW)[0].tokens == 7
        await b.query(UsageQuery())  # b's last rows are in the file
        assert await a.refresh()
        assert a.totals.used("acme", NOW)[0].tokens == 100
    finally:
        await a.stop()
        await b.stop()
