from __future__ import annotations

import pytest

from hub.config.schema import ConfigError
from hub.resilience.retry_budget import RetryBudget, RetryBudgetConfig, parse_retry_budget


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _drain(budget: RetryBudget) -> int:
    n = 0
    while budget.try_withdraw():
        n += 1
        assert n < 10_000
    return n


def test_floor_allows_min_per_s_over_the_window_without_traffic() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=1.0, window_s=10), FakeClock())
    assert _drain(budget) == 10


def test_ratio_of_requests() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=0.0, window_s=10), FakeClock())
    assert not budget.try_withdraw()
    for _ in range(4):
        budget.deposit()
    assert not budget.try_withdraw()  # 0.8 of a retry
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    for _ in range(100):
        budget.deposit()
    assert _drain(budget) == 20


def test_window_slides_for_requests_and_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_per_s=0.1, window_s=10), clock)
    for _ in range(10):
        budget.deposit()
    assert _drain(budget) == 6  # 5 earned + 1 floor
    clock.now += 5
    assert budget.balance == 0
    clock.now += 5  # requests and retries from t=0 both expire
    assert budget.balance == pytest.approx(1.0)
    assert _drain(budget) == 1
    budget.deposit()
    budget.deposit()
    assert _drain(budget) == 1


def test_outage_retries_stay_bounded() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(), clock)  # 0.2 ratio, 1/s floor, 10 s
    retries = 0
    for _ in range(1000):  # 100 requests/s for 10 s, every attempt failing
        budget.deposit()
        for _ in range(2):  # max_attempts=3
            retries += budget.try_withdraw()
        clock.now += 0.01
    assert retries == 210  # 20% of 1000 + 10 floor, not 2000


def test_snapshot_and_repr() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=0.0), FakeClock())
    for _ in range(10):
        budget.deposit()
    assert budget.try_withdraw()
    assert budget.snapshot() == {"balance": 1.0, "requests": 10, "retries": 1}
    assert repr(budget) == "<RetryBudget ratio=0.2 balance=1.0 requests=10 retries=1>"


def test_parse() -> None:
    assert parse_retry_budget(None, "resilience.retry_budget") == RetryBudgetConfig()
    assert parse_retry_budget({"ratio": 0, "min_per_s": 0, "window_s": 5}, "r") == \
        RetryBudgetConfig(ratio=0.0, min_per_s=0.0, window_s=5.0)
    with pytest.raises(ConfigError, match=r"resilience\.retry_budget\.ratio: must be <= 1"):
        parse_retry_budget({"ratio": 20}, "resilience.retry_budget")
    with pytest.raises(ConfigError, match=r"resilience\.retry_budget\.window_s: must be > 0"):
        parse_retry_budget({"window_s": 0}, "resilience.retry_budget")
    with pytest.raises(ConfigError, match=r"resilience\.retry_budget\.per_s: unknown key"):
        parse_retry_budget({"per_s": 1}, "resilience.retry_budget")
