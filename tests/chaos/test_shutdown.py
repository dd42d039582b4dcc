"""SIGTERM while streams are flowing: they finish, new connections are refused, exit 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.chaos.conftest import Figure
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import chat, read_stream

pytestmark = pytest.mark.timeout(60)

GRACE_S = 8.0
CHUNKS = 40
STREAMS = 8


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_sigterm_lets_streams_finish_refuses_new_and_exits_zero(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """Eight 2 s streams and a SIGTERM: the listener closes at once, every stream gets all
    its events and [DONE], and the hub exits 0 before the grace period is over."""
    worker = make_fault(mode="ok", chunks=CHUNKS, delay_s=0.05)  # 2 s streams
    hub = make_hub(workers_config(worker, shutdown_grace_s=GRACE_S))
    started = [asyncio.Event() for _ in range(STREAMS)]
    streams = [asyncio.create_task(read_stream(
        http, f"{hub.url}/v1/chat/completions", chat("fault-model", stream=True),
        started=ev, start_after=2)) for ev in started]
    await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 10)

    hub.proc.signal(signal.SIGTERM)
    t_term = time.monotonic()
    refused_after: float | None = None
    while time.monotonic() - t_term < 2:
        if await _refused(hub.port):
            refused_after = time.monotonic() - t_term
            break
        await asyncio.sleep(0.01)
    assert refused_after is not None, "the hub still accepts connections after SIGTERM"
    assert not any(s.done() for s in streams), "streams ended before the listener closed"

    results = await asyncio.wait_for(asyncio.gather(*streams), GRACE_S + 5)
    t_streams = time.monotonic() - t_term
    for r in results:
        assert r.complete, r
        assert len(r.chunks) == CHUNKS
    proc = hub.proc.proc
    assert proc is not None
    try:
        code = await asyncio.to_thread(proc.wait, GRACE_S + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError("the hub did not exit after its streams finished") from None
    t_exit = time.monotonic() - t_term
    assert code == 0
    assert t_streams < GRACE_S and t_exit < GRACE_S
    assert "spokehub stopped" in hub.proc.log()
    figure("streams", STREAMS)
    figure("sigterm_to_refusing_s", round(refused_after, 3))
    figure("sigterm_to_streams_done_s", round(t_streams, 3))
    figure("sigterm_to_exit_s", round(t_exit, 3))


async def test_sigterm_grace_is_honoured_and_cut_streams_end_cleanly(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession) -> None:
    """A stream longer than ``shutdown_grace_s``: the hub exits 0 when the grace is over
    (not later: a supervisor's stop timeout is sized on it), and the stream it has to cut
    ends like any other broken stream, with an error event and [DONE]."""
    grace = 2.0
    worker = make_fault(mode="ok", chunks=200, delay_s=0.05)  # a 10 s stream
    hub = make_hub(workers_config(worker, shutdown_grace_s=grace))
    started = asyncio.Event()
    stream = asyncio.create_task(read_stream(
        http, f"{hub.url}/v1/chat/completions", chat("fault-model", stream=True),
        started=started, start_after=2))
    await asyncio.wait_for(started.wait(), 10)
    hub.proc.signal(signal.SIGTERM)
    t_term = time.monotonic()
    result = await asyncio.wait_for(stream, grace + 10)
    proc = hub.proc.proc
    assert proc is not None
    code = await asyncio.to_thread(proc.wait, grace + 10)
    t_exit = time.monotonic() - t_term
    assert code == 0
    assert t_exit < grace + 1.0, f"exited {t_exit:.1f}s after SIGTERM, grace is {grace}s"
    assert result.ended_with_error, result.transport_error or result
