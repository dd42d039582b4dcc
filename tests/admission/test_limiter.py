"""Admission (per-tenant rate limits and queues)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub.admission.caps import Caps
from hub.admission.limiter import (
    Admission,
    AdmissionConfig,
    TenantLimits,
    Ticket,
)
from hub.errors import AdmissionRejected


class FakeTime:
    """A clock plus a sleep() that only returns when the test advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self.now + 1e-9]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now + 1e-9]
        for _, fut in sorted(due, key=lambda tf: tf[0]):
            if not fut.done():
                fut.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)


def admission(ft: FakeTime, default: TenantLimits | None = None,
              **tenants: TenantLimits) -> Admission:
    cfg = AdmissionConfig(default=default or TenantLimits(), tenants=tenants)
    return Admission(cfg, clock=ft, sleep=ft.sleep)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def limits(**kw: Any) -> TenantLimits:
    return TenantLimits(**kw)


async def test_unlimited_is_a_fast_path() -> None:
    ft = FakeTime()
    adm = admission(ft)
    for _ in range(1000):
        ticket = await adm.admit("t", cost_tokens=10_000)
        assert ticket.waited_s == 0.0
    assert adm.tracked_tenants == 0


async def test_burst_then_429_with_retry_after() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=1.0, burst=2.0, max_queue=0))
    await adm.admit("t")
    await adm.admit("t")
    with pytest.raises(AdmissionRejected) as info:
        await adm.admit("t")
    exc = info.value
    assert exc.status == 429 and exc.code == "rate_limit_exceeded"
    assert exc.headers == {"Retry-After": "1"}
    await ft.advance(1.0)
    await adm.admit("t")


@pytest.mark.parametrize(("rate", "expected"), [(100.0, "1"), (1.0, "1"), (0.4, "3"),
                                                (0.1, "10")])
async def test_retry_after_is_whole_seconds_at_least_one(rate: float, expected: str) -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=rate, burst=1.0, max_queue=0))
    await adm.admit("t")
    with pytest.raises(AdmissionRejected) as info:
        await adm.admit("t")
    assert info.value.headers["Retry-After"] == expected


async def test_queue_is_fifo_and_bounded() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=1.0, burst=1.0, max_queue=2,
                               queue_timeout_s=10.0))
    await adm.admit("t")
    order: list[int] = []

    async def waiter(i: int) -> Ticket:
        ticket = await adm.admit("t")
        order.append(i)
        return ticket

    tasks = [asyncio.create_task(waiter(i)) for i in (1, 2)]
    await settle()
    assert adm.queued("t") == 2 and order == []
    with pytest.raises(AdmissionRejected, match="already waiting") as info:
        await adm.admit("t")
    assert info.value.headers["Retry-After"] == "3"
    await ft.advance(1.0)
    assert order == [1]
    await ft.advance(1.0)
    assert order == [1, 2] and adm.queued("t") == 0
    assert [t.result().waited_s for t in tasks] == pytest.approx([1.0, 2.0])


async def test_wait_longer_than_queue_timeout_is_rejected_at_once() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=1.0, burst=1.0, max_queue=100,
                               queue_timeout_s=2.5))
    await adm.admit("t")
    tasks = [asyncio.create_task(adm.admit("t")) for _ in range(2)]  # waits 1 s and 2 s
    await settle()
    with pytest.raises(AdmissionRejected) as info:
        await adm.admit("t")  # would wait 3 s
    assert info.value.headers["Retry-After"] == "3"
    assert adm.queued("t") == 2
    await ft.advance(2.0)
    await asyncio.gather(*tasks)


async def test_zero_queue_timeout_never_waits() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=1.0, burst=1.0, max_queue=10,
                               queue_timeout_s=0.0))
    await adm.admit("t")
    with pytest.raises(AdmissionRejected):
        await adm.admit("t")


async def test_flooding_tenant_does_not_consume_another_tenants_bucket() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=2.0, burst=2.0, max_queue=3,
                               queue_timeout_s=5.0))
    flood = [asyncio.create_task(adm.admit("noisy")) for _ in range(50)]
    await settle()
    rejected = sum(1 for t in flood if t.done() and isinstance(t.exception(),
                                                              AdmissionRejected))
    assert rejected == 50 - 2 - 3 and adm.queued("noisy") == 3
    # The quiet tenant gets its whole burst immediately, without waiting.
    for _ in range(2):
        assert (await adm.admit("quiet")).waited_s == 0.0
    await ft.advance(2.0)
    await asyncio.gather(*(t for t in flood if not t.done() or t.exception() is None))


async def test_per_tenant_override() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=1.0, burst=1.0, max_queue=0),
                    vip=limits(requests_per_s=100.0, burst=50.0, max_queue=0),
                    free=limits())
    for _ in range(50):
        await adm.admit("vip")
    for _ in range(500):
        await adm.admit("free")
    await adm.admit("other")
    with pytest.raises(AdmissionRejected):
        await adm.admit("other")
    assert adm.limits_for("vip").burst == 50.0
    assert adm.limits_for("nobody") is adm.cfg.default


async def test_token_budget_charged_and_refunded() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(tokens_per_min=600.0, max_queue=5, queue_timeout_s=5.0))
    ticket = await adm.admit("t", cost_tokens=600)
    with pytest.raises(AdmissionRejected) as info:
        await adm.admit("t", cost_tokens=100)  # 10 s away at 10 tokens/s
    assert info.value.headers["Retry-After"] == "10"
    ticket.settle(used_tokens=100)  # 500 unused tokens come back
    ticket.settle(used_tokens=0)  # settling twice refunds nothing more
    assert (await adm.admit("t", cost_tokens=400)).waited_s == 0.0
    with pytest.raises(AdmissionRejected):
        await adm.admit("t", cost_tokens=200)
    queued = asyncio.create_task(adm.admit("t", cost_tokens=130))  # 100 left: 3 s away
    await settle()
    assert adm.queued("t") == 1
    await ft.advance(3.0)
    assert (await queued).waited_s == pytest.approx(3.0)


async def test_cancelled_waiter_returns_its_booking() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=1.0, burst=1.0, max_queue=5,
                               queue_timeout_s=10.0))
    await adm.admit("t")
    task = asyncio.create_task(adm.admit("t"))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adm.queued("t") == 0
    await ft.advance(1.0)
    assert (await adm.admit("t")).waited_s == 0.0


async def test_idle_tenants_are_evicted() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=10.0, burst=5.0, max_queue=0))
    for i in range(1000):
        await adm.admit(f"tenant-{i}")
    assert adm.tracked_tenants == 1000
    await ft.advance(0.05)
    assert adm.sweep() == 0  # buckets not yet refilled: state still matters
    await ft.advance(61.0)
    await adm.admit("fresh")  # a sweep is due
    assert adm.tracked_tenants == 1


async def test_tenant_with_waiters_is_not_evicted() -> None:
    ft = FakeTime()
    adm = admission(ft, limits(requests_per_s=0.01, burst=1.0, max_queue=1,
                               queue_timeout_s=1000.0))
    await adm.admit("slow")
    task = asyncio.create_task(adm.admit("slow"))
    await settle()
    assert adm.sweep() == 0 and adm.queued("slow") == 1
    await ft.advance(100.0)
    await task
    await ft.advance(100.0)
    assert adm.sweep() == 1


def test_caps_travel_with_limits() -> None:
    caps = Caps(max_messages=3, max_prompt_chars=100, max_tokens_cap=64)
    cfg = AdmissionConfig(default=TenantLimits(caps=caps))
    assert cfg.for_tenant("x").caps.max_tokens_cap == 64
