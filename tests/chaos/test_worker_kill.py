"""Workers crash under load: kill -9 between requests and in the middle of streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from tests.chaos.conftest import LLAMA_HTTP_THREADS, Figure
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.load import (
    StreamResult,
    Tally,
    chat,
    hub_workers,
    metric_samples,
    read_stream,
    run_fixed,
    until,
)

pytestmark = pytest.mark.timeout(60)

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
REQUESTS = 600
CONCURRENCY = 32
KILL_AT = 150  # completed requests when the worker is killed
RESTART_AT = 300  # ... and when it is started again


async def test_kill9_one_of_three_workers_under_load(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """600 requests at concurrency 32 over three llama.cpp workers; one is killed with
    SIGKILL a quarter of the way in and restarted half way: no client request fails, and
    the restarted worker is taken back into rotation."""
    workers = [make_llama(seed=i % 2, extra=LLAMA_HTTP_THREADS) for i in range(3)]
    hub = make_hub(workers_config(*workers, resilience={"breaker": {"cooldown_s": 1.0}}))
    victim, victim_name = workers[2], "w2"
    client = openai.AsyncOpenAI(base_url=hub.base_url, api_key="unused", max_retries=0,
                                timeout=30)
    tally = Tally()
    served: list[tuple[float, str]] = []  # (completed at, worker)
    completed = 0
    kill_due, restart_due, load_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    marks: dict[str, float] = {}

    async def one(_: int) -> None:
        nonlocal completed
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="tiny", messages=MESSAGES, max_tokens=16)
            raw.parse()
            worker = raw.headers.get("x-spokehub-worker") or "?"
            tally.ok(worker)
            served.append((time.monotonic(), worker))
        except openai.APIError as exc:
            tally.fail(getattr(exc, "status_code", None) or 0, repr(exc))
        completed += 1
        if completed == KILL_AT:
            kill_due.set()
        elif completed == RESTART_AT:
            restart_due.set()

    async def chaos() -> None:
        await kill_due.wait()
        marks["in_flight_at_kill"] = (await hub_workers(http, hub.url))[victim_name]["in_flight"]
        marks["kill"] = time.monotonic()
        await asyncio.to_thread(victim.kill)
        await restart_due.wait()
        marks["restart"] = time.monotonic()
        await asyncio.to_thread(victim.start)  # same port; returns once /health is ok

    async def watch() -> None:
        """Record when the hub took the victim out of rotation and put it back."""
        while not load_done.is_set():
            if "kill" in marks:
                w = (await hub_workers(http, hub.url))[victim_name]
                now = time.monotonic()
                if not w["healthy"] and "down" not in marks:
                    marks["down"] = now
                if w["breaker"]["state"] == "open" and "open" not in marks:
                    marks["open"] = now
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(run_fixed(REQUESTS, CONCURRENCY, one), chaos())
    finally:
        load_done.set()
        await watcher
        await client.close()

    assert tally.sent == REQUESTS
    assert tally.failed == 0, tally.errors
    # The kill hit live traffic: the hub had to fail some attempts over.
    attempts = sum((await metric_samples(http, hub.url,
                                         "spokehub_upstream_attempts_total")).values())
    assert attempts > REQUESTS
    assert "down" in marks or "open" in marks, "the dead worker was never taken out"

    # Recovery: the restarted worker serves again (under the load, or right after it).
    back = [t for t, w in served if w == victim_name and t > marks["restart"]]
    if not back:
        async def victim_serves() -> bool:
            async with http.post(f"{hub.url}/v1/chat/completions", json=chat("tiny")) as resp:
                await resp.read()
                assert resp.status == 200
                return resp.headers.get("X-Spokehub-Worker") == victim_name
        await until(victim_serves, timeout=10, interval=0.05, what="restarted worker in use")
        back = [time.monotonic()]
    out_after = min(marks.get("down", float("inf")), marks.get("open", float("inf")))
    figure("requests", tally.sent)
    figure("failed", tally.failed)
    figure("upstream_attempts", int(attempts))
    figure("in_flight_on_victim_at_kill", marks["in_flight_at_kill"])
    figure("kill_to_out_of_rotation_s", round(out_after - marks["kill"], 3))
    if "open" in marks:
        figure("kill_to_breaker_open_s", round(marks["open"] - marks["kill"], 3))
    figure("restart_to_serving_s", round(back[0] - marks["restart"], 3))


def _assert_clean_error(result: StreamResult, code: str) -> None:
    assert result.status == 200
    assert result.bad_lines == [], "a half event reached the client"
    assert result.ended_with_error, result
    assert result.events[-1]["error"]["code"] == code
    assert len(result.errors) == 1


async def test_fault_worker_dies_midstream_others_unaffected(
        make_llama: Callable[..., LlamaWorker], make_fault: Callable[..., FaultWorker],
        make_hub: Callable[..., HubProcess], http: aiohttp.ClientSession,
        figure: Figure) -> None:
    """A worker that exits half way through an event: its client gets the complete events,
    then one error event and [DONE]; six streams on two other workers finish normally."""
    # w0, w1 serve "tiny"; w2 sends 5 events and half a sixth, then exits.
    a = make_llama(seed=0, slots=3, ctx=3 * 1600, extra=LLAMA_HTTP_THREADS)
    b = make_llama(seed=1, slots=3, ctx=3 * 1600, extra=LLAMA_HTTP_THREADS)
    doomed = make_fault("fault-model", "die_midstream", chunks=5, delay_s=0.05)
    hub = make_hub(workers_config(a, b, doomed))
    url = f"{hub.url}/v1/chat/completions"
    started = [asyncio.Event() for _ in range(6)]
    others = [asyncio.create_task(read_stream(
        http, url, chat("tiny", stream=True, max_tokens=1200, ignore_eos=True), started=ev,
        start_after=2)) for ev in started]
    await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 15)
    doomed_result = await read_stream(http, url, chat("fault-model", stream=True))
    assert not all(t.done() for t in others), "the other streams ended before the fault"
    results = await asyncio.wait_for(asyncio.gather(*others), 30)

    _assert_clean_error(doomed_result, "upstream_error")
    assert len(doomed_result.chunks) == 5  # every complete event got through, nothing else
    assert {r.worker for r in results} == {"w0", "w1"}
    for r in results:
        assert r.finished, r.transport_error or r.errors or r.bad_lines
    workers = await hub_workers(http, hub.url)
    assert all(w["in_flight"] == 0 for w in workers.values())
    figure("streams_cut", 1)
    figure("streams_finished", len(results))
    figure("events_before_error", len(doomed_result.chunks))


async def test_sigkill_llama_worker_midstream(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """SIGKILL a llama.cpp worker while it streams four long generations: those four end
    with an error event and [DONE]; the four on the other worker run to their end."""
    a = make_llama(seed=0, slots=4, ctx=4 * 1100, extra=LLAMA_HTTP_THREADS)
    b = make_llama(seed=1, slots=4, ctx=4 * 1100, extra=LLAMA_HTTP_THREADS)
    hub = make_hub(workers_config(a, b))
    url = f"{hub.url}/v1/chat/completions"
    started = [asyncio.Event() for _ in range(8)]
    tasks = [asyncio.create_task(read_stream(
        http, url, chat("tiny", stream=True, max_tokens=1000, ignore_eos=True), started=ev,
        start_after=3)) for ev in started]
    await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 15)
    await asyncio.to_thread(b.kill)
    t_kill = time.monotonic()
    done, _ = await asyncio.wait(tasks, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    t_first_end = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)

    on_killed = [r for r in results if r.worker == "w1"]
    on_alive = [r for r in results if r.worker == "w0"]
    assert len(on_killed) == 4 and len(on_alive) == 4  # round robin split them evenly
    for r in on_killed:
        _assert_clean_error(r, "upstream_error")
        assert len(r.chunks) >= 3
    for r in on_alive:
        assert r.finished, r.transport_error or r.errors or r.bad_lines

    async def settled() -> bool:
        return all(w["in_flight"] == 0 for w in (await hub_workers(http, hub.url)).values())
    await until(settled, timeout=5)
    assert all(t.result().worker == "w1" for t in done)  # the cut streams ended first
    figure("streams_cut", len(on_killed))
    figure("streams_finished", len(on_alive))
    figure("kill_to_error_event_s", round(t_first_end - t_kill, 3))
