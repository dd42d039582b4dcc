"""Stream endings through a real hub: a stream is clean only if the worker ended it.

Workers are ``tests/support/fault_worker.py`` processes; clients are aiohttp or a raw
socket that stops reading.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from hub.upstream.http1 import ChunkedBody
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import chat, fault_stats, read_stream, session, until

pytestmark = pytest.mark.timeout(120)

LINE_END = re.compile(rb"\r\n|\r|\n")


def _sse(body: bytes) -> list[bytes]:
    """The data of each event in an SSE body, for any of the three line endings."""
    events: list[bytes] = []
    data: list[bytes] = []
    for line in LINE_END.split(body):
        if not line:
            if data:
                events.append(b"\n".join(data))
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    return events


def _hub(make_hub: Callable[..., HubProcess], worker: FaultWorker,
         **timeouts: float) -> HubProcess:
    return make_hub({"health": {"interval_s": 0.5, "timeout_s": 1},
                     "timeouts": {"first_byte_s": 10, "idle_s": 10, "total_s": 120,
                                  **timeouts},
                     "workers": [{"name": "w", "url": worker.url}]})


@pytest.mark.parametrize("mode", ["no_done", "cut_event", "reset_midstream"])
async def test_stream_the_worker_did_not_finish_ends_with_an_error(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        mode: str) -> None:
    """Every whole event arrives, then one error event and [DONE]: never a clean-looking
    end the worker did not send, never half an event."""
    worker = make_fault(mode=mode, chunks=3)
    hub = _hub(make_hub, worker)
    async with session() as http:
        result = await read_stream(http, f"{hub.url}/v1/chat/completions",
                                   chat("fault-model", stream=True))
    assert result.bad_lines == [], "half an event reached the client"
    assert len(result.chunks) == 3
    assert result.ended_with_error, result
    assert result.errors[-1]["error"]["code"] == "upstream_error"


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
async def test_every_sse_line_ending_is_relayed_event_by_event(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        eol: str) -> None:
    worker = make_fault(chunks=4)
    worker.control(eol=eol)
    hub = _hub(make_hub, worker)
    async with session() as http, http.post(f"{hub.url}/v1/chat/completions",
                                            json=chat("fault-model", stream=True)) as resp:
        assert resp.status == 200
        body = await resp.read()
    events = _sse(body)
    assert events[-1] == b"[DONE]"
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]] == [
        "t0 ", "t1 ", "t2 ", "t3 "]
    assert body.endswith(("data: [DONE]" + eol + eol).encode())  # passed through as sent


async def _raw_stream(port: int, body: dict[str, Any]) -> socket.socket:
    """A streaming request on a socket with a small receive buffer, so that a client
    that stops reading soon pushes back on the hub."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    raw = json.dumps(body).encode()
    await loop.sock_sendall(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
                            b"Content-Type: application/json\r\nConnection: close\r\n"
                            + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    return sock


async def _recv_until(sock: socket.socket, buf: bytearray, done: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    while not done():
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            return
        buf += chunk


async def test_slow_client_is_not_an_upstream_timeout(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess]) -> None:
    """A client that stops reading for many times ``idle_s`` while the worker keeps
    producing: the hub waits on the client, and the stream completes without error.
    The client resumes only once the worker has been held up for three times
    ``idle_s`` (the worker reports it), so the hub was held up at least that long."""
    idle_s = 0.5
    worker = make_fault(mode="flood")
    worker.control(pad=4096, stall_s=3 * idle_s)
    hub = _hub(make_hub, worker, idle_s=idle_s)
    sock = await _raw_stream(hub.port, chat("fault-model", stream=True))
    buf = bytearray()
    try:
        async with asyncio.timeout(60):
            await _recv_until(sock, buf, lambda: b"data: " in buf)  # the stream started
            async with session() as http:
                async def worker_held_up() -> bool:
                    wait: float = (await fault_stats(http, worker.url))["write_wait_s"]
                    return wait >= 3 * idle_s
                await until(worker_held_up, timeout=45, what="backpressure on the worker")
            await _recv_until(sock, buf, lambda: False)  # now read it all, to EOF
    finally:
        sock.close()
    head, _, chunked = bytes(buf).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    decoder = ChunkedBody()
    events = _sse(decoder.feed(chunked))
    assert decoder.done, "the hub's answer ended early"
    assert events[-1] == b"[DONE]"
    docs = [json.loads(e) for e in events[:-1]]
    assert not [d for d in docs if "error" in d], docs[-1]
    assert docs[-1]["choices"][0]["delta"]["content"] == "after the stall "


async def test_slow_client_still_gets_the_whole_stream_over_aiohttp(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess]) -> None:
    """The same with an ordinary client library that simply reads late."""
    idle_s = 0.5
    worker = make_fault(mode="flood")
    worker.control(pad=4096, stall_s=3 * idle_s)
    hub = _hub(make_hub, worker, idle_s=idle_s)
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
            f"{hub.url}/v1/chat/completions", json=chat("fault-model", stream=True)) as resp:
        assert resp.status == 200
        async with session() as probe:
            async def worker_held_up() -> bool:
                wait: float = (await fault_stats(probe, worker.url))["write_wait_s"]
                return wait >= 3 * idle_s
            await until(worker_held_up, timeout=45, what="backpressure on the worker")
        body = await resp.read()
    events = _sse(body)
    assert events[-1] == b"[DONE]"
    assert b'"error"' not in events[-2]
