"""SIGHUP under traffic: a broken config changes nothing, a good one applies without
touching the streams in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.chaos.conftest import Figure
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import Tally, chat, hub_workers, non_stream, read_stream, until

pytestmark = pytest.mark.timeout(60)

BROKEN = {
    "yaml syntax": b"workers:\n  - name: w0\n    url: [unclosed\n",
    "unknown key": b"routing:\n  max_attemps: 2\nworkers: []\n",
    "bad value": b"routing:\n  max_attempts: 0\n",
    "not utf-8": b"workers:\n  - name: \xff\xfe\n",
}


def _log_lines(hub: HubProcess) -> list[dict[str, Any]]:
    out = []
    for line in hub.proc.log().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            doc = {"level": "raw", "msg": line}
        out.append(doc if isinstance(doc, dict) else {"level": "raw", "msg": line})
    return out


def _view(workers: dict[str, dict[str, Any]]) -> dict[str, tuple[str, bool, list[str]]]:
    """What a reload may change about the workers."""
    return {name: (w["url"], w["healthy"], w["models"]) for name, w in workers.items()}


async def _sighup_and_wait_log(hub: HubProcess, needle: str, timeout: float = 5) -> dict[str, Any]:
    seen = len(_log_lines(hub))
    hub.proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for doc in _log_lines(hub)[seen:]:
            if needle in str(doc.get("msg", "")):
                return doc
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line with {needle!r} after SIGHUP:\n"
                         + "\n".join(str(d) for d in _log_lines(hub)[seen:]))


@pytest.mark.parametrize("broken", list(BROKEN))
async def test_sighup_with_broken_config_keeps_serving(
        broken: str, make_fault: Callable[..., FaultWorker],
        make_hub: Callable[..., HubProcess], http: aiohttp.ClientSession) -> None:
    """The old config keeps serving (no request fails), an error line is logged, the
    workers are unchanged, and POST /admin/reload rejects the same file with a 400."""
    w0 = make_fault(mode="ok")
    hub = make_hub(workers_config(w0))
    before = _view(await hub_workers(http, hub.url))
    tally = Tally()
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            await non_stream(http, hub.url, tally, chat("fault-model"))

    lanes = [asyncio.create_task(traffic()) for _ in range(2)]
    try:
        hub.config_path.write_bytes(BROKEN[broken])
        line = await _sighup_and_wait_log(hub, "config reload rejected")
        await asyncio.sleep(0.3)  # keep the traffic going a little after the reload
    finally:
        stop.set()
        await asyncio.gather(*lanes)
    assert line["level"] == "error"
    assert hub.proc.alive()
    assert tally.sent > 0 and tally.failed == 0, tally.errors
    assert _view(await hub_workers(http, hub.url)) == before
    # The admin endpoint rejects the same file the same way, without a server error.
    async with http.post(f"{hub.url}/admin/reload") as resp:
        doc = await resp.json()
        assert resp.status == 400, doc
        assert doc["error"]["code"] == "invalid_request"


async def test_sighup_adds_worker_without_touching_stream_in_flight(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """A reload that adds a worker: the new worker gets traffic, and a stream that was in
    flight during the reload gets every event, in order, then [DONE]."""
    chunks = 60
    w0 = make_fault(mode="ok", chunks=chunks, delay_s=0.05)  # a 3 s stream
    w1 = make_fault(mode="ok", chunks=chunks, delay_s=0.05)
    hub = make_hub(workers_config(w0))
    started = asyncio.Event()
    stream = asyncio.create_task(read_stream(
        http, f"{hub.url}/v1/chat/completions", chat("fault-model", stream=True),
        started=started, start_after=3))
    await asyncio.wait_for(started.wait(), 10)

    hub.write_config(workers_config(w0, w1))
    t_hup = time.monotonic()
    line = await _sighup_and_wait_log(hub, "config reloaded")
    assert "worker w1: added" in line["msg"]
    assert not stream.done(), "the stream ended before the reload: make it longer"

    async def new_worker_healthy() -> bool:
        return bool((await hub_workers(http, hub.url)).get("w1", {}).get("healthy"))
    await until(new_worker_healthy, timeout=5)
    tally = Tally()
    for _ in range(6):
        await non_stream(http, hub.url, tally, chat("fault-model"))
    t_serving = time.monotonic()
    assert tally.failed == 0, tally.errors
    assert tally.workers["w1"] >= 2  # round robin over two workers
    result = await asyncio.wait_for(stream, 15)
    assert result.complete, result
    assert result.worker == "w0"
    assert len(result.chunks) == chunks  # every event, none lost or repeated
    assert [c["choices"][0]["delta"]["content"] for c in result.chunks] == [
        f"t{i} " for i in range(chunks)]
    figure("sighup_to_new_worker_serving_s", round(t_serving - t_hup, 3))
