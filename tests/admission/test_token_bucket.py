"""TokenBucket: burst, sustained rate, retry-after values, debt and refunds."""

from __future__ import annotations

import math

import pytest

from hub.admission.token_bucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_sustained_rate() -> None:
    clock = Clock()
    b = TokenBucket(rate=2.0, burst=5.0, clock=clock)
    assert [b.try_take() for _ in range(5)] == [0.0] * 5
    assert b.try_take() == pytest.approx(0.5)
    admitted = 0
    for _ in range(80):  # 10 s in 1/8 s steps: exactly rate * 10 more requests
        clock.now += 0.125
        while b.try_take() == 0.0:
            admitted += 1
    assert admitted == 20


def test_retry_after_values() -> None:
    clock = Clock()
    b = TokenBucket(rate=4.0, burst=4.0, clock=clock)
    assert b.try_take(4) == 0.0
    assert b.try_take(1) == pytest.approx(0.25)
    assert b.try_take(3) == pytest.approx(0.75)
    clock.now += 0.5
    assert b.tokens == pytest.approx(2.0)
    assert b.try_take(3) == pytest.approx(0.25)
    assert b.tokens == pytest.approx(2.0)  # a refused take takes nothing
    clock.now += 0.25
    assert b.try_take(3) == 0.0


def test_refill_caps_at_burst() -> None:
    clock = Clock()
    b = TokenBucket(rate=10.0, burst=3.0, clock=clock)
    clock.now += 3600
    assert b.tokens == 3.0 and b.full
    assert [b.try_take() for _ in range(4)][-1] > 0


def test_oversized_request_needs_a_full_bucket_and_leaves_debt() -> None:
    clock = Clock()
    b = TokenBucket(rate=1.0, burst=10.0, clock=clock)
    assert b.try_take(1) == 0.0
    assert b.try_take(25) == pytest.approx(1.0)  # waits for a full bucket, not 25 s
    clock.now += 1.0
    assert b.try_take(25) == 0.0
    assert b.tokens == pytest.approx(-15.0)
    assert b.try_take(1) == pytest.approx(16.0)


def test_reserve_queues_in_order_and_refund() -> None:
    clock = Clock()
    b = TokenBucket(rate=2.0, burst=1.0, clock=clock)
    assert [b.reserve() for _ in range(4)] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    b.refund(1.0)
    assert b.wait_time() == pytest.approx(1.5)
    clock.now += 1.5
    assert b.try_take() == 0.0
    b.refund(100.0)
    assert b.tokens == 1.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (math.inf, 1),
                                             (1, math.nan)])
def test_invalid(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
