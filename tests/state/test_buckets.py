"""Per-tenant token buckets shared by two hubs through a real redis-server: two
``Admission`` instances (two hubs) with ``SharedBuckets`` on their own links."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hub.admission.limiter import Admission, AdmissionConfig, TenantLimits, Ticket
from hub.errors import AdmissionRejected
from hub.state.buckets import SCRIPT_SHA, RateLimiterUnavailable, SharedBuckets
from tests.state.limits_support import redis_server, two_links
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

__all__ = ["redis_server", "two_links"]  # fixtures

Links = tuple[LinkForTests, LinkForTests]


def config(**limits: Any) -> AdmissionConfig:
    rate = limits.get("requests_per_s")
    if rate is not None and "burst" not in limits:
        limits["burst"] = max(1.0, rate)
    return AdmissionConfig(default=TenantLimits(**limits))


def hub(link: LinkForTests, cfg: AdmissionConfig, *, on_outage: str = "open",
        sleep: Callable[[float], Any] = asyncio.sleep, max_batch: int = 64) -> Admission:
    return Admission(cfg, remote=SharedBuckets(link, on_outage=lambda: on_outage,
                                               sleep=sleep, max_batch=max_batch))


def shared(adm: Admission) -> SharedBuckets:
    assert isinstance(adm.remote, SharedBuckets)
    return adm.remote


async def redis_now(link: LinkForTests) -> float:
    sec, usec = await link.client.time()
    return float(sec) + float(usec) / 1e6


async def bucket(link: LinkForTests, tenant: str, kind: str = "req") -> float | None:
    raw = await link.client.hget(link.key("rl", f"{{{tenant}}}", kind), "t")
    return None if raw is None else float(raw)


async def test_a_tenants_limit_holds_across_two_hubs(two_links: Links) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    cfg = config(requests_per_s=0.5, burst=5, queue_timeout_s=0)
    hubs = [hub(link_a, cfg), hub(link_b, cfg)]
    started = await redis_now(link_a)
    admitted = {0: 0, 1: 0}
    for i in range(40):
        try:
            await hubs[i % 2].admit("acme")
            admitted[i % 2] += 1
        except AdmissionRejected as exc:
            assert int(exc.headers["Retry-After"]) >= 1
    elapsed = await redis_now(link_a) - started
    total = admitted[0] + admitted[1]
    # One bucket for both hubs: the burst plus what refilled meanwhile (within one
    # token), where two local buckets would have admitted 10.
    assert 5 <= total <= 5 + 0.5 * elapsed + 1, (admitted, elapsed)
    assert admitted[0] >= 1 and admitted[1] >= 1
    # an unrelated tenant has its own bucket
    await hubs[1].admit("other")


@pytest.mark.parametrize("max_batch", [1, 4, 64])
async def test_concurrent_admissions_share_one_bucket(two_links: Links, max_batch: int) -> None:
    """Many admissions at once go out in pipelines (of at most ``max_batch``, or each on
    its own); each still books exactly once."""
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    cfg = config(requests_per_s=0.001, burst=25, queue_timeout_s=0)
    hubs = [hub(link_a, cfg, max_batch=max_batch), hub(link_b, cfg, max_batch=max_batch)]

    async def one(i: int) -> bool:
        try:
            await hubs[i % 2].admit("acme")
        except AdmissionRejected:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(60)))
    assert sum(results) == 25  # the refill in the meantime is far below one token
    tokens = await bucket(link_a, "acme")
    assert tokens is not None and 0.0 <= tokens < 0.5


async def test_waits_queue_behind_the_other_hubs_bookings(two_links: Links) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    cfg = config(requests_per_s=10, burst=1, queue_timeout_s=30)
    a, b = hub(link_a, cfg, sleep=record), hub(link_b, cfg, sleep=record)
    first = await a.admit("acme")
    second = await b.admit("acme")  # the bucket is empty: B waits behind A's token
    third = await a.admit("acme")  # and A's next one behind B's booking
    assert first.waited_s == 0.0
    assert 0.0 < second.waited_s <= 0.1 + 1e-6
    assert third.waited_s > second.waited_s
    assert third.waited_s <= 0.2 + 1e-6
    assert waits == [second.waited_s, third.waited_s]


async def test_a_wait_longer_than_the_queue_timeout_is_refused(two_links: Links) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    cfg = config(requests_per_s=0.01, burst=1, queue_timeout_s=5)
    await hub(link_a, cfg).admit("acme")
    before = await bucket(link_b, "acme")
    with pytest.raises(AdmissionRejected) as err:
        await hub(link_b, cfg).admit("acme")
    assert int(err.value.headers["Retry-After"]) > 5
    after = await bucket(link_b, "acme")
    assert before is not None and after is not None
    assert after == before  # a refused request takes nothing


async def test_cancelled_waiter_gives_its_booking_back(two_links: Links) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    forever, entered = asyncio.Event(), asyncio.Event()

    async def block(seconds: float) -> None:
        entered.set()
        await forever.wait()

    cfg = config(requests_per_s=0.01, burst=1, queue_timeout_s=1000)
    await hub(link_a, cfg).admit("acme")
    b = hub(link_b, cfg, sleep=block)
    task = asyncio.get_running_loop().create_task(b.admit("acme"))
    await entered.wait()
    assert shared(b).queued("acme") == 1
    assert (await bucket(link_b, "acme") or 0.0) < -0.5  # booked into debt
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await shared(b).aclose()
    tokens = await bucket(link_b, "acme")
    assert tokens is not None and -0.5 < tokens < 0.5
    assert shared(b).queued("acme") == 0


async def test_settle_refunds_unused_completion_tokens(two_links: Links) -> None:
    link_a, _ = two_links
    await link_a.start()
    cfg = config(tokens_per_min=600, queue_timeout_s=0)
    a = hub(link_a, cfg)
    ticket: Ticket = await a.admit("acme", cost_tokens=500)
    assert ticket.cost_tokens == 500
    spent = await bucket(link_a, "acme", "tok")
    assert spent is not None and spent < 150
    ticket.settle(100)
    await shared(a).aclose()
    refunded = await bucket(link_a, "acme", "tok")
    assert refunded is not None and refunded >= spent + 400 - 1e-6
    assert refunded <= 600
    assert await bucket(link_a, "acme", "req") is None  # no request limit: untouched


async def test_a_huge_request_leaves_the_bucket_in_debt(two_links: Links) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    cfg = config(tokens_per_min=600, queue_timeout_s=0)
    await hub(link_a, cfg).admit("acme", cost_tokens=10**30)  # a full bucket admits it
    debt = await bucket(link_a, "acme", "tok")
    assert debt is not None and debt < -1e15  # it pays in full (clamped at 2**53)
    ttl_ms = await link_a.client.pttl(link_a.key("rl", "{acme}", "tok"))
    assert 0 < ttl_ms <= 30 * 86400 * 1000
    with pytest.raises(AdmissionRejected):
        await hub(link_b, cfg).admit("acme", cost_tokens=1)
    assert link_a.up and link_b.up  # no script error marked the link down


async def test_idle_tenants_buckets_expire(two_links: Links) -> None:
    link_a, _ = two_links
    await link_a.start()
    cfg = config(requests_per_s=50, burst=2, queue_timeout_s=0)
    await hub(link_a, cfg).admit("acme")
    key = link_a.key("rl", "{acme}", "req")
    ttl_ms = await link_a.client.pttl(key)
    # refilled after 1/50 s; kept one second more
    assert 0 < ttl_ms <= 1020 + 1
    for _ in range(600):
        if not await link_a.client.exists(key):
            break
        await asyncio.sleep(0.05)
    assert not await link_a.client.exists(key)
    # a fresh bucket is full again
    await hub(link_a, cfg).admit("acme")
    assert await bucket(link_a, "acme") == pytest.approx(1.0, abs=0.05)


async def test_script_is_loaded_again_after_a_flush(two_links: Links) -> None:
    link_a, _ = two_links
    await link_a.start()
    cfg = config(requests_per_s=5, burst=5, queue_timeout_s=0)
    a = hub(link_a, cfg)
    await a.admit("acme")
    await link_a.client.script_flush()
    assert await link_a.client.script_exists(SCRIPT_SHA) == [False]
    await a.admit("acme")
    assert await link_a.client.script_exists(SCRIPT_SHA) == [True]
    assert await bucket(link_a, "acme") == pytest.approx(3.0, abs=0.1)
    # again, with calls sent together in a pipeline: each runs once
    await link_a.client.script_flush()
    cfg = config(requests_per_s=0.001, burst=50, queue_timeout_s=0)
    b = hub(link_a, cfg)
    await asyncio.gather(*(b.admit("batch") for _ in range(20)))
    assert await bucket(link_a, "batch") == pytest.approx(30.0, abs=0.1)
    assert not shared(a).fallbacks and not shared(b).fallbacks


async def _outage(tmp_path: Path, mode: str) -> tuple[RedisServer, LinkForTests, Admission]:
    server = RedisServer(tmp_path).start()
    link = LinkForTests(server.url, "hub-a", "outage")
    await link.start()
    cfg = AdmissionConfig(
        default=TenantLimits(requests_per_s=0.01, burst=2, queue_timeout_s=0),
        tenants={"free": TenantLimits()})
    adm = hub(link, cfg, on_outage=mode)
    await adm.admit("acme")  # through Redis
    assert await bucket(link, "acme") == pytest.approx(1.0, abs=0.01)
    server.kill()
    return server, link, adm


async def test_outage_fails_open_to_the_local_buckets(tmp_path: Path) -> None:
    server, link, adm = await _outage(tmp_path, "open")
    try:
        # the first command to fail marks the link down; the local bucket limits alone
        await adm.admit("acme")
        assert not link.up
        await adm.admit("acme")
        with pytest.raises(AdmissionRejected):
            await adm.admit("acme")  # the local burst of 2 is spent
        assert shared(adm).fallbacks["open"] == 3
        # Redis back on the same port: the link reconnects and the shared bucket counts
        server.start()
        for _ in range(600):
            if link.up:
                break
            await asyncio.sleep(0.05)
        assert link.up
        await adm.admit("acme")  # a fresh server: a full shared bucket
        assert await bucket(link, "acme") == pytest.approx(1.0, abs=0.01)
    finally:
        await link.aclose()
        server.kill()


async def test_outage_fails_closed_for_limited_tenants(tmp_path: Path) -> None:
    server, link, adm = await _outage(tmp_path, "closed")
    try:
        for _ in range(2):
            with pytest.raises(RateLimiterUnavailable) as err:
                await adm.admit("acme")
            assert err.value.status == 503
            assert err.value.code == "rate_limiter_unavailable"
            assert err.value.headers["Retry-After"] == "1"
        assert not link.up
        assert shared(adm).fallbacks["closed"] == 2
        await adm.admit("free")  # a tenant without limits never asks Redis
    finally:
        await link.aclose()
        server.kill()
