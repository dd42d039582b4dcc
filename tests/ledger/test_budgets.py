"""Budget verdicts (pure) and the windows they count in, with an injected clock."""

from __future__ import annotations

import calendar

from hub.ledger.budgets import Budget, State, Used, judge, ratios
from hub.ledger.totals import Totals
from hub.ledger.windows import Windows


def utc(*when: int) -> float:
    """Unix seconds of a UTC time given as year, month, day[, hour, minute, second]."""
    return float(calendar.timegm((*when, 0, 0, 0)[:6]))


def test_unlimited_is_ok() -> None:
    assert judge(Budget(), Used(10**9, 10**6), Used(10**9, 10**6)).state is State.OK


def test_soft_and_hard_token_limits() -> None:
    b = Budget(daily_tokens=1000, soft_ratio=0.8)
    assert judge(b, Used(799), Used(799)).state is State.OK
    v = judge(b, Used(800), Used(800))
    assert (v.state, v.window, v.kind) == (State.SOFT, "daily", "tokens")
    v = judge(b, Used(1000), Used(1000))
    assert (v.state, v.window, v.kind) == (State.HARD, "daily", "tokens")
    assert ratios(b, Used(1000), Used(1000)) == [("daily", "tokens", 1.0)]
    assert ratios(Budget(monthly_cost=0.0), Used(), Used()) == [("monthly", "cost", 0.0)]


def test_the_worst_limit_wins_and_monthly_beats_daily() -> None:
    b = Budget(daily_tokens=100, monthly_tokens=1000, daily_cost=1.0, monthly_cost=5.0)
    v = judge(b, Used(10, 0.95), Used(500, 4.5))  # daily cost soft, monthly cost soft
    assert (v.state, v.window, v.kind) == (State.SOFT, "monthly", "cost")
    v = judge(b, Used(100, 0.1), Used(600, 4.9))  # daily tokens hard
    assert (v.state, v.window, v.kind) == (State.HARD, "daily", "tokens")
    v = judge(b, Used(100, 0.1), Used(1000, 4.9))  # both token limits hard
    assert (v.state, v.window) == (State.HARD, "monthly")


def test_zero_limit_is_hard_at_once() -> None:
    v = judge(Budget(monthly_cost=0.0), Used(), Used())
    assert v.state is State.HARD


def test_windows_are_utc_days_and_months() -> None:
    w = Windows.at(utc(2026, 12, 31, 23, 59, 59))
    assert (w.day, w.day_end) == (utc(2026, 12, 31), utc(2027, 1, 1))
    assert (w.month, w.month_end) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert w.label("daily") == "2026-12-31" and w.label("monthly") == "2026-12"
    assert Windows.at(utc(2028, 2, 29, 12)).month_end == utc(2028, 3, 1)


def test_day_rollover_keeps_the_month() -> None:
    t = Totals(utc(2026, 11, 29, 23, 0))
    t.add("acme", 100, 1.0, utc(2026, 11, 29, 23, 59, 59))
    t.add("beta", 5, 0.0, utc(2026, 11, 29, 23, 59, 59))
    assert t.used("acme", utc(2026, 11, 29, 23, 59, 59)) == (Used(100, 1.0), Used(100, 1.0))
    t.add("acme", 10, 0.5, utc(2026, 11, 30, 0, 0, 0))
    assert t.used("acme", utc(2026, 11, 30, 1)) == (Used(10, 0.5), Used(110, 1.5))
    assert t.used("beta", utc(2026, 11, 30, 1)) == (Used(), Used(5, 0.0))


def test_month_rollover_empties_both() -> None:
    t = Totals(utc(2026, 11, 30, 12))
    t.add("acme", 100, 1.0, utc(2026, 11, 30, 12))
    assert t.used("acme", utc(2026, 12, 1, 0, 0, 1)) == (Used(), Used())
    t.add("acme", 7, 0.0, utc(2026, 12, 1, 0, 0, 2))
    assert t.used("acme", utc(2026, 12, 1, 5)) == (Used(7), Used(7))
