"""A worker that answers 500 to everything: its breaker opens after N failures, stops all
traffic to it while open, and lets exactly one probe through to recover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.chaos.conftest import Figure
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import (
    Tally,
    chat,
    fault_control,
    fault_stats,
    hub_workers,
    non_stream,
    run_fixed,
    until,
)

pytestmark = pytest.mark.timeout(60)

STREAK = 4  # resilience.breaker.consecutive_failures
COOLDOWN_S = 3.0
PROBE_S = 0.8  # the recovered worker answers this slowly, so the probe is easy to watch


async def test_error500_breaker_opens_then_recovers_through_one_probe(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """Opens after exactly ``consecutive_failures`` failed requests; nothing reaches the
    worker while open; after the cooldown exactly one request (the probe) reaches it until
    the breaker closes, with eight clients sending all along; no client request fails."""
    bad, good = make_fault(mode="ok"), make_fault(mode="ok")
    hub = make_hub({
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "resilience": {"breaker": {"consecutive_failures": STREAK, "min_requests": 1000,
                                   "cooldown_s": COOLDOWN_S, "max_cooldown_s": COOLDOWN_S}},
        "workers": [{"name": "bad", "url": bad.url}, {"name": "good", "url": good.url}],
    })
    tally = Tally()

    async def breaker() -> dict[str, Any]:
        snap: dict[str, Any] = (await hub_workers(http, hub.url))["bad"]["breaker"]
        return snap

    async def reached_bad() -> int:
        n: int = (await fault_stats(http, bad.url))["requests"]
        return n

    # Both workers serve while healthy.
    await run_fixed(8, 1, lambda _: non_stream(http, hub.url, tally, chat("fault-model")))
    assert set(tally.workers) == {"bad", "good"}

    # Fault: every request to "bad" fails. One client at a time, so the count is exact.
    before = await reached_bad()
    await fault_control(http, bad.url, mode="error500")
    t_fault = time.monotonic()
    for _ in range(4 * STREAK):
        await non_stream(http, hub.url, tally, chat("fault-model"))
        if (await breaker())["state"] == "open":
            break
    t_open = time.monotonic()
    assert (await breaker())["state"] == "open"
    assert await reached_bad() - before == STREAK
    assert tally.failed == 0, tally.errors  # each failure was retried on "good"

    # While open, nothing reaches it, even under concurrent load.
    before = await reached_bad()
    await run_fixed(120, 8, lambda _: non_stream(http, hub.url, tally, chat("fault-model")))
    snap = await breaker()
    assert snap["state"] == "open" and snap["retry_in_s"] > 0, "load outlasted the cooldown"
    assert await reached_bad() == before
    assert tally.failed == 0, tally.errors

    # Repair it; after the cooldown, concurrent traffic lets exactly one probe through.
    await fault_control(http, bad.url, mode="ok", delay_s=PROBE_S)
    t_fixed = time.monotonic()

    async def cooled() -> bool:
        return bool((await breaker())["retry_in_s"] == 0)
    await until(cooled, timeout=COOLDOWN_S + 2)
    t_cooled = time.monotonic()
    stop = asyncio.Event()

    async def lane() -> None:
        while not stop.is_set():
            await non_stream(http, hub.url, tally, chat("fault-model"))

    lanes = [asyncio.create_task(lane()) for _ in range(8)]
    half_open_counts: list[int] = []
    half_open_active: list[int] = []
    try:
        async def probe_started() -> bool:
            return bool((await breaker())["state"] == "half_open")
        await until(probe_started, timeout=5, interval=0.01)
        while (await breaker())["state"] == "half_open":
            stats = await fault_stats(http, bad.url)
            if (await breaker())["state"] != "half_open":
                break  # closed between the two reads: this sample may include new traffic
            half_open_counts.append(stats["requests"])
            half_open_active.append(stats["active"])
            await asyncio.sleep(0.05)
        t_closed = time.monotonic()
        assert (await breaker())["state"] == "closed"

        async def serving_again() -> bool:
            return await reached_bad() > before + 1
        await until(serving_again, timeout=5)
    finally:
        stop.set()
        await asyncio.gather(*lanes)

    assert tally.failed == 0, tally.errors
    assert len(half_open_counts) >= 5  # the probe took PROBE_S: many samples while half open
    assert set(half_open_counts) == {before + 1}, half_open_counts  # exactly one probe
    assert set(half_open_active) == {1}
    figure("requests", tally.sent)
    figure("failed", tally.failed)
    figure("failures_to_open", STREAK)
    figure("fault_to_breaker_open_s", round(t_open - t_fault, 3))
    figure("repair_to_closed_s", round(t_closed - t_fixed, 3))
    figure("cooldown_end_to_closed_s", round(t_closed - t_cooled, 3))
    figure("probe_requests_while_half_open", half_open_counts[-1] - before)
