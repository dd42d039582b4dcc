"""Each route's stream: its final event, and the error event that ends a broken one.

Streams run through :class:`hub.forward.wire.Wire` in a real aiohttp server and are read
with a real client, the way ``attempt.py`` uses them.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.errors import UpstreamError
from hub.forward.deadline import Deadline
from hub.forward.relay import StreamCut
from hub.forward.sse import ANTHROPIC_DONE, OPENAI_DONE, RESPONSES_DONE, Ending
from hub.forward.wire import wire_for
from hub.upstream import UpstreamTransportError


class _Source:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = deque(parts)

    async def readany(self) -> bytes:
        return self.parts.popleft() if self.parts else b""


async def _stream(route: str, parts: list[bytes]) -> bytes:
    wire = wire_for(route)
    source = _Source(parts)

    async def handler(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        await out.prepare(request)
        async with Deadline(30, 60) as dl:
            try:
                await wire.relay(source, out, await wire.first(source), dl)
                await out.write_eof()
            except (UpstreamTransportError, UpstreamError):
                await wire.end_with_error(out, UpstreamError("worker failed mid-stream"))
        return out

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client, asyncio.timeout(30):
        return await (await client.get("/")).read()


def _sse(kind: str, doc: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(doc)}\n\n".encode()


def test_responses_and_messages_end_at_any_of_their_final_events() -> None:
    delta = _sse("response.output_text.delta", {"type": "response.output_text.delta",
                                                "delta": "response.completed"})
    for kind in ("response.completed", "response.failed", "response.incomplete", "error"):
        final = _sse(kind, {"type": kind})
        assert RESPONSES_DONE.find(delta + final + b"event: x\n\n") == len(delta + final)
    assert RESPONSES_DONE.find(delta) == -1  # the name in a data line is no final event
    stop = _sse("message_stop", {"type": "message_stop"})
    assert ANTHROPIC_DONE.find(stop) == len(stop)
    assert ANTHROPIC_DONE.find(_sse("error", {"type": "error"})) > 0
    assert ANTHROPIC_DONE.find(_sse("message_delta", {"error": "message_stop"})) == -1
    assert OPENAI_DONE.quick == b"[DONE]"  # the hot path's one-scan test is unchanged
    assert Ending(b"event", b"a", also=(b"b",)).quick == b"event:"


async def test_a_responses_stream_that_breaks_ends_with_its_error_event() -> None:
    created = _sse("response.created", {"type": "response.created"})
    out = await _stream("/responses", [created, b"event: response.output_text.delta\ndata: {"])
    assert out.startswith(created)
    tail = out[len(created):]
    assert tail.startswith(b"event: error\ndata: ")
    doc = json.loads(tail.split(b"data: ", 1)[1])
    assert doc == {"type": "error", "code": "upstream_error",
                   "message": "worker failed mid-stream", "param": None}
    assert b"[DONE]" not in out


async def test_a_responses_stream_the_worker_failed_itself_is_relayed_as_it_ended() -> None:
    parts = [_sse("response.created", {"type": "response.created"}),
             _sse("response.failed", {"type": "response.failed"})]
    assert await _stream("/responses", parts) == b"".join(parts)


async def test_a_messages_stream_that_breaks_ends_with_anthropics_error_event() -> None:
    start = _sse("message_start", {"type": "message_start"})
    out = await _stream("/messages", [start])  # clean end, no message_stop: cut short
    assert out.startswith(start)
    event = out[len(start):]
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert json.loads(event.split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "api_error", "message": "worker failed mid-stream"}}


async def test_chat_streams_keep_openais_error_event_and_done() -> None:
    out = await _stream("/chat/completions", [b'data: {"a": 1}\n\n'])
    assert out.endswith(b"data: [DONE]\n\n")
    assert b'"upstream_error"' in out


async def test_ndjson_relays_whole_lines_and_ends_a_cut_with_an_error_line() -> None:
    class _Cut(_Source):
        async def readany(self) -> bytes:
            if not self.parts:
                raise UpstreamTransportError("the translator found no final line")
            return await super().readany()

    lines = [b'{"done":false}\n', b'{"done":false}\n']
    wire = wire_for("/api/chat")
    assert wire.ndjson and wire.content_type == "application/x-ndjson"
    out = await _stream("/api/chat", [*lines, b'{"done":true}\n'])
    assert out == b"".join(lines) + b'{"done":true}\n'

    source = _Cut(list(lines))

    async def handler(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        await out.prepare(request)
        async with Deadline(30, 60) as dl:
            try:
                await wire.relay(source, out, await wire.first(source), dl)
            except UpstreamTransportError:
                await wire.end_with_error(out, UpstreamError("worker failed mid-stream"))
        return out

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        got = await (await client.get("/")).read()
    assert got == b"".join(lines) + b'{"error":"worker failed mid-stream"}\n'


async def test_ndjson_with_no_line_at_all_is_cut_before_the_first_byte() -> None:
    with pytest.raises(StreamCut):
        await wire_for("/api/generate").first(_Source([]))
