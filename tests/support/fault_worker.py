"""A fault-injecting OpenAI-compatible worker, run as a real process.

It speaks llama.cpp's health and model endpoints and the OpenAI routes, and can be
switched between behaviours at run time with ``POST /_control {"mode": ...}``:

- ``ok``: answer normally (stream: ``chunks`` SSE events, ``delay_s`` apart)
- ``error500``: answer every inference request with HTTP 500
- ``hang``: accept the request and never answer
- ``trickle``: send headers and one byte per ``delay_s``, never an event end
- ``die_midstream``: send ``chunks`` events of a stream, then exit the process (kill -9 style)
- ``reset_midstream``: send ``chunks`` events and half of one more, then reset the connection
- ``no_done``: send ``chunks`` events, then end the body cleanly without ``data: [DONE]``
- ``cut_event``: send ``chunks`` events and half of one more, then end the body cleanly
- ``flood``: stream events until one write has waited ``stall_s`` for a reader that does
  not read, then a few more and ``[DONE]``; ``/_stats`` says how long the current write
  has been waiting (``write_wait_s``)
- ``late_body``: send a non-stream answer's headers at once and its body ``delay_s`` later
- ``unhealthy``: /health answers 503
- ``gate``: hold every inference request until ``POST /_control {"gate": "open"}``
  (``{"gate": "closed"}`` holds new ones again)

Options, set with ``/_control``: ``eol`` the SSE line ending (``"\\n"``,
``"\\r\\n"`` or ``"\\r"``); ``pad`` bytes of filler in each event; ``poison``: any
request whose body contains this text gets HTTP 500, whatever the mode (a "query of
death"); ``usage`` (default true): a non-stream answer reports token usage, false
leaves it out; ``stream_usage`` (default false): a stream ends with a usage chunk.

``/_stats`` also lists the headers of the last inference requests (``headers``, newest
last, names lowercased), to check what the hub passed on (``traceparent``, ...).

It also takes ``/v1/responses`` and ``/v1/messages``, streaming their own event types
(``response.output_text.delta`` ... ``response.completed``; ``content_block_delta`` ...
``message_stop``) in every mode where chat streams chunks and ``[DONE]``.

Usage: python -m tests.support.fault_worker --port P [--model NAME] [--mode ok]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import time
from typing import Any

from aiohttp import web

STATE = web.AppKey("state", dict)
GATE = web.AppKey("gate", asyncio.Event)
KEEP_HEADERS = 20  # requests whose headers /_stats lists


def _chunk(model: str, i: int, text: str, eol: bytes = b"\n", pad: int = 0) -> bytes:
    doc = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": int(time.time()),
           "model": model, "choices": [{"index": 0, "delta": {"content": text + "x" * pad},
                                        "finish_reason": None}]}
    return b"data: " + json.dumps(doc).encode() + eol + eol


def _event(path: str, model: str, i: int, text: str, *, eol: bytes = b"\n",
           pad: int = 0) -> bytes:
    """One content event of the route's own API (OpenAI chat chunks by default)."""
    if path == "/v1/responses":
        kind, doc = "response.output_text.delta", {
            "type": "response.output_text.delta", "item_id": "msg_fault", "output_index": 0,
            "content_index": 0, "delta": text + "x" * pad, "sequence_number": i + 1}
    elif path == "/v1/messages":
        kind, doc = "content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text + "x" * pad}}
    else:
        return _chunk(model, i, text, eol, pad)
    return (f"event: {kind}".encode() + eol + b"data: " + json.dumps(doc).encode()
            + eol + eol)


def _final(path: str, model: str, eol: bytes = b"\n") -> bytes:
    """The route's final event."""
    if path == "/v1/responses":
        doc: dict[str, Any] = {"type": "response.completed", "sequence_number": 99, "response": {
            "id": "resp_fault", "object": "response", "created_at": int(time.time()),
            "model": model, "status": "completed", "output": []}}
        return b"event: response.completed" + eol + b"data: " + json.dumps(doc).encode() + eol + eol
    if path == "/v1/messages":
        return b"event: message_stop" + eol + b'data: {"type": "message_stop"}' + eol + eol
    return b"data: [DONE]" + eol + eol


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP reset, as a crashed or killed peer does."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def health(request: web.Request) -> web.Response:
    if request.app[STATE]["mode"] == "unhealthy":
        return web.json_response({"error": {"code": 503, "message": "Loading model"}}, status=503)
    return web.json_response({"status": "ok"})


async def models(request: web.Request) -> web.Response:
    model = request.app[STATE]["model"]
    return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    doc = await request.json()
    state.update(doc)
    if "gate" in doc:
        gate = request.app[GATE]
        if doc["gate"] == "open":
            gate.set()
        else:
            gate.clear()
    return web.json_response({k: v for k, v in state.items() if k not in ("seen", "headers")})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    started = state.get("write_started")
    return web.json_response({"requests": state["requests"], "active": state["active"],
                              "mode": state["mode"], "headers": state["headers"],
                              "write_wait_s": 0.0 if started is None
                              else time.monotonic() - started})


async def infer(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state["requests"] += 1
    state["active"] += 1
    state["headers"] = [*state["headers"][-(KEEP_HEADERS - 1):],
                        {k.lower(): v for k, v in request.headers.items()}]
    try:
        raw = await request.read()
        body = json.loads(raw)
        mode = state["mode"]
        delay = float(state.get("delay_s", 0.01))
        poison = state.get("poison")
        if mode == "error500" or (poison and poison.encode() in raw):
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "gate":
            await request.app[GATE].wait()
        if mode == "trickle":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            while True:
                await resp.write(b":")
                await asyncio.sleep(delay)
        if not body.get("stream"):
            return await _answer(request, state, late=mode == "late_body")
        return await _stream(request, state)
    finally:
        state["active"] -= 1


async def _answer(request: web.Request, state: dict[str, Any], late: bool) -> web.StreamResponse:
    doc = {"id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
           "model": state["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant",
                                                             "content": "ok" + "x" * int(
                                                                 state.get("pad", 0))}}],
           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    if not state.get("usage", True):
        del doc["usage"]
    delay = float(state.get("delay_s", 0.01))
    if not late:
        await asyncio.sleep(delay)
        return web.json_response(doc)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)  # headers now: the worker has taken the request
    await asyncio.sleep(delay)
    await resp.write(json.dumps(doc).encode())
    await resp.write_eof()
    return resp


async def _stream(request: web.Request, state: dict[str, Any]) -> web.StreamResponse:
    mode, model = state["mode"], state["model"]
    delay = float(state.get("delay_s", 0.01))
    eol = str(state.get("eol", "\n")).encode()
    pad = int(state.get("pad", 0))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if mode == "flood":
        await _flood(resp, state, eol, pad)
        await resp.write(b"data: [DONE]" + eol + eol)
        await resp.write_eof()
        return resp
    for i in range(int(state.get("chunks", 5))):
        await resp.write(_event(request.path, model, i, f"t{i} ", eol=eol, pad=pad))
        await asyncio.sleep(delay)
    if mode in ("die_midstream", "reset_midstream", "cut_event"):
        await resp.write(b'data: {"half": ')
        if mode == "die_midstream":
            os._exit(1)
        if mode == "reset_midstream":
            await asyncio.sleep(delay)  # let the half event leave before the reset
            _reset(request)
            return resp
    elif mode != "no_done":
        if state.get("stream_usage") and request.path.endswith("/chat/completions"):
            n = int(state.get("chunks", 5))
            doc = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "model": model,
                   "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n,
                                            "total_tokens": 3 + n}}
            await resp.write(b"data: " + json.dumps(doc).encode() + eol + eol)
        await resp.write(_final(request.path, model, eol))
    await resp.write_eof()
    return resp


async def _flood(resp: web.StreamResponse, state: dict[str, Any], eol: bytes, pad: int) -> None:
    """Events as fast as the reader takes them, until one write waited ``stall_s``."""
    stall_s = float(state.get("stall_s", 1.0))
    for i in range(1_000_000):
        state["write_started"] = started = time.monotonic()
        await resp.write(_chunk(state["model"], i, f"t{i} ", eol, pad))
        state["write_started"] = None
        if time.monotonic() - started >= stall_s:
            break
    for i in range(3):
        await resp.write(_chunk(state["model"], i, "after the stall ", eol))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="fault-model")
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--delay-s", type=float, default=0.01)
    ap.add_argument("--chunks", type=int, default=5)
    args = ap.parse_args()
    app = web.Application()
    app[STATE] = {"mode": args.mode, "model": args.model, "delay_s": args.delay_s,
                  "chunks": args.chunks, "requests": 0, "active": 0, "headers": []}
    app[GATE] = asyncio.Event()

    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                  "/v1/responses", "/v1/messages"):
        app.router.add_post(route, infer)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
