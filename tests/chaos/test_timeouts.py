"""Workers that accept a request and then never answer, or answer a byte at a time."""

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
    breaker_state,
    chat,
    hub_workers,
    non_stream,
    post_json,
    read_stream,
    until,
)

pytestmark = pytest.mark.timeout(60)

FIRST_BYTE_S = 1.0
IDLE_S = 1.0
TOTAL_S = 3.0
STREAK = 3  # resilience.breaker.consecutive_failures


def _config(workers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "timeouts": {"connect_s": 1, "first_byte_s": FIRST_BYTE_S, "idle_s": IDLE_S,
                     "total_s": TOTAL_S},
        # A worker that accepted a request (sent headers) and then times out is not
        # retried by default; these tests are about failover, so they ask for it.
        "routing": {"max_attempts": 3, "retry_on_timeout": True},
        "resilience": {"breaker": {"consecutive_failures": STREAK, "cooldown_s": 60,
                                   "max_cooldown_s": 60},
                       "retry_budget": {"ratio": 0.5}},
        "workers": workers,
    }


async def _timed(coro: Any) -> tuple[Any, float]:
    start = time.monotonic()
    out = await coro
    return out, time.monotonic() - start


async def test_hang_and_trickle_time_out_and_open_breakers(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """first_byte_s, idle_s and total_s each end a request with a clean 504 or error event
    (a non-stream answer whose headers came may take until total_s); the hung and
    trickling workers' breakers open, and meanwhile every request for the model they
    share with a healthy worker succeeds."""
    hang = make_fault(mode="hang")
    try:
        await _hang_and_trickle(make_fault, make_hub, http, figure, hang)
    finally:
        hang.proc.kill()  # its handlers sleep for an hour: a graceful stop would wait on them


async def _hang_and_trickle(make_fault: Callable[..., FaultWorker],
                            make_hub: Callable[..., HubProcess], http: aiohttp.ClientSession,
                            figure: Figure, hang: FaultWorker) -> None:
    trickle = make_fault(mode="trickle", delay_s=0.05)
    stall = make_fault(mode="ok", chunks=3, delay_s=IDLE_S * 4)  # one event, then silence
    slow = make_fault(mode="ok", chunks=100, delay_s=IDLE_S * 0.4)  # steady, never done
    good = make_fault(mode="ok")
    hub = make_hub(_config([
        {"name": "hang", "url": hang.url, "models": ["hang-only", "shared"]},
        {"name": "trickle", "url": trickle.url, "models": ["trickle-only", "shared"]},
        {"name": "stall", "url": stall.url, "models": ["stall-only"]},
        {"name": "slow", "url": slow.url, "models": ["slow-only"]},
        {"name": "good", "url": good.url, "models": ["shared"]},
    ]))
    url = f"{hub.url}/v1/chat/completions"

    # Each faulty worker on its own: the configured timeouts fire, as clean OpenAI errors.
    (hang_plain, t_hang), (hang_stream, t_hang_s), (trickle_plain, t_trickle), \
        (trickle_stream, t_trickle_s), (stall_stream, t_stall), (slow_stream, t_slow) = \
        await asyncio.gather(
            _timed(post_json(http, url, chat("hang-only"))),
            _timed(read_stream(http, url, chat("hang-only", stream=True))),
            _timed(post_json(http, url, chat("trickle-only"))),
            _timed(read_stream(http, url, chat("trickle-only", stream=True))),
            _timed(read_stream(http, url, chat("stall-only", stream=True))),
            _timed(read_stream(http, url, chat("slow-only", stream=True))))
    for status, _, doc in (hang_plain, trickle_plain):
        assert status == 504
        assert doc["error"]["code"] == "upstream_timeout", doc
    assert hang_stream.status == 504  # no byte yet: a plain error response, not a stream
    assert b"upstream_timeout" in hang_stream.body
    for seconds in (t_hang, t_hang_s):
        assert FIRST_BYTE_S <= seconds < FIRST_BYTE_S + 1.5
    assert TOTAL_S <= t_trickle < TOTAL_S + 1.5  # headers came: the answer may take total_s
    # A stream that never produced an event: a 504, or (if its headers went out) an error
    # event and [DONE]; the trickled bytes never reach the client as an event.
    if trickle_stream.status == 200:
        assert trickle_stream.ended_with_error, trickle_stream
        assert trickle_stream.chunks == []
        assert trickle_stream.events[-1]["error"]["code"] == "upstream_timeout"
    else:
        assert trickle_stream.status == 504 and b"upstream_timeout" in trickle_stream.body
    assert t_trickle_s < TOTAL_S + 1.5
    # Streams that started: every event relayed, then an error event and [DONE].
    for result in (stall_stream, slow_stream):
        assert result.ended_with_error, result
        assert result.events[-1]["error"]["code"] == "upstream_timeout"
    assert len(stall_stream.chunks) == 1
    assert IDLE_S <= t_stall < IDLE_S + 1.5  # silence after an event: idle_s
    assert len(slow_stream.chunks) >= 3
    assert TOTAL_S <= t_slow < TOTAL_S + 1.5  # events keep coming: only total_s ends it

    # Traffic for a model the faulty workers share with a healthy one: every request
    # succeeds (failover before the first byte), and the breakers take them out.
    tally = Tally()
    fast_after_open: list[float] = []
    opened: dict[str, float] = {}
    start = time.monotonic()

    async def shared_lane() -> None:
        while time.monotonic() - start < 8 and len(fast_after_open) < 40:
            t0 = time.monotonic()
            both_open = len(opened) == 2
            await non_stream(http, hub.url, tally, chat("shared"))
            if both_open:
                fast_after_open.append(time.monotonic() - t0)

    async def watch() -> None:
        while len(opened) < 2 and time.monotonic() - start < 8:
            workers = await hub_workers(http, hub.url)
            for name in ("hang", "trickle"):
                if workers[name]["breaker"]["state"] == "open" and name not in opened:
                    opened[name] = time.monotonic() - start
            await asyncio.sleep(0.02)

    await asyncio.gather(watch(), *(shared_lane() for _ in range(4)))
    assert tally.failed == 0, tally.errors
    assert set(tally.workers) == {"good"}
    assert set(opened) == {"hang", "trickle"}, opened
    assert await breaker_state(http, hub.url, "good") == "closed"
    assert len(fast_after_open) >= 40
    assert max(fast_after_open) < FIRST_BYTE_S  # no more waiting on the faulty workers
    # With its breaker open, a model only the hung worker serves fails fast.
    (status, _, doc), seconds = await _timed(post_json(http, url, chat("hang-only")))
    assert status == 503 and doc["error"]["code"] == "no_healthy_worker"
    assert seconds < 0.5

    figure("requests", tally.sent)
    figure("failed", tally.failed)
    figure("hang_breaker_open_s", round(opened["hang"], 3))
    figure("trickle_breaker_open_s", round(opened["trickle"], 3))
    figure("hang_non_stream_504_s", round(t_hang, 3))
    figure("trickle_stream_end_s", round(t_trickle_s, 3))
    figure("stall_stream_error_event_s", round(t_stall, 3))
    figure("slow_stream_error_event_s", round(t_slow, 3))
    figure("max_latency_after_open_s", round(max(fast_after_open), 3))


async def test_streams_to_trickling_worker_open_its_breaker(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession) -> None:
    """Streaming-only traffic to a worker that sends bytes but never an event.

    Every such stream ends in a 504 error event after ``total_s``; the worker must not
    keep looking healthy to the breaker because its first byte was a keep-alive comment.
    """
    trickle = make_fault(mode="trickle", delay_s=0.05)
    hub = make_hub(_config([{"name": "trickle", "url": trickle.url,
                             "models": ["trickle-only"]}]))
    url = f"{hub.url}/v1/chat/completions"
    results = await asyncio.gather(*(read_stream(http, url, chat("trickle-only", stream=True))
                                     for _ in range(STREAK)))
    for r in results:
        assert r.status != 200 or r.ended_with_error, r
    state = await breaker_state(http, hub.url, "trickle")
    assert state == "open", f"{STREAK} streams timed out and the breaker is {state}"

    async def is_open() -> bool:
        return await breaker_state(http, hub.url, "trickle") == "open"
    await until(is_open, timeout=1)
