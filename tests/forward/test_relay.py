"""relay_events writes whole SSE events only, and ends broken streams cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.errors import UpstreamError
from hub.forward.deadline import Deadline
from hub.forward.relay import end_with_error, relay_events
from hub.upstream import UpstreamBodyError, UpstreamTransportError


class _Upstream:
    def __init__(self, parts: list[bytes], fail: bool = False) -> None:
        self.parts = parts
        self.fail = fail

    async def readany(self) -> bytes:
        await asyncio.sleep(0)
        if self.parts:
            return self.parts.pop(0)
        if self.fail:
            raise UpstreamBodyError("upstream died")
        return b""


def _app(parts: list[bytes], fail: bool) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        await out.prepare(request)
        up = _Upstream(list(parts), fail)
        first = await up.readany()
        async with Deadline(5, 5) as dl:
            try:
                await relay_events(up, out, first, dl)
                await out.write_eof()
            except (UpstreamTransportError, UpstreamError):
                await end_with_error(out, UpstreamError("worker failed mid-stream"))
        return out

    app = web.Application()
    app.router.add_get("/", handler)
    return app


@pytest.fixture
async def fetch() -> AsyncIterator[object]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def run(parts: list[bytes], fail: bool = False) -> bytes:
        client = TestClient(TestServer(_app(parts, fail)))
        await client.start_server()
        clients.append(client)
        resp = await client.get("/")
        return await resp.read()

    yield run
    for c in clients:
        await c.close()


async def test_events_split_across_chunks_are_joined(fetch: object) -> None:
    parts = [b"data: {\"a\"", b": 1}\n\ndata: {\"b\": 2}\n", b"\ndata: [DONE]\n\n"]
    out = await fetch(parts)  # type: ignore[operator]
    assert out == b"".join(parts)



async def test_upstream_death_mid_event_gives_clean_error(fetch: object) -> None:
    out = await fetch([b"data: {\"a\": 1}\n\n", b"data: {\"half\": "], fail=True)  # type: ignore[operator]
    events = [e for e in out.split(b"\n\n") if e]
    assert events[0] == b"data: {\"a\": 1}"
    assert b"half" not in out
    assert b'"upstream_error"' in events[1]
    assert events[-1] == b"data: [DONE]"


async def test_clean_eof_without_done_is_an_error(fetch: object) -> None:
    out = await fetch([b"data: {\"a\": 1}\n\n"])  # type: ignore[operator]
    events = [e for e in out.split(b"\n\n") if e]
    assert events[0] == b"data: {\"a\": 1}"
    assert b'"upstream_error"' in events[1]
    assert events[-1] == b"data: [DONE]"


async def test_crlf_events(fetch: object) -> None:
    parts = [b"data: 1\r\n\r\ndata: 2\r", b"\n\r\n"]
    out = await fetch(parts)  # type: ignore[operator]
    assert out.startswith(b"data: 1\r\n\r\ndata: 2\r\n\r\n")
