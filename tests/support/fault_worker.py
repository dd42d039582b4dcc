"""A fault-injecting OpenAI-compatible worker, run as a real process.

It speaks llama.cpp's health and model endpoints and the OpenAI routes, and can be
switched between behaviours at run time with ``POST /_control {"mode": ...}``:

- ``ok``: answer normally (stream: ``chunks`` SSE events, ``delay_s`` apart)
- ``error500``: answer every inference request with HTTP 500
- ``hang``: accept the request and never answer
- ``trickle``: send headers and one byte per ``delay_s``, never an event end
- ``die_midstream``: send ``chunks`` events of a stream, then exit the process (kill -9 style)
- ``unhealthy``: /health answers 503

Usage: python -m tests.support.fault_worker --port P [--model NAME] [--mode ok]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from aiohttp import web

STATE = web.AppKey("state", dict)


def _chunk(model: str, i: int, text: str) -> bytes:
    doc = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": int(time.time()),
           "model": model, "choices": [{"index": 0, "delta": {"content": text},
                                        "finish_reason": None}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def health(request: web.Request) -> web.Response:
    if request.app[STATE]["mode"] == "unhealthy":
        return web.json_response({"error": {"code": 503, "message": "Loading model"}}, status=503)
    return web.json_response({"status": "ok"})


async def models(request: web.Request) -> web.Response:
    model = request.app[STATE]["model"]
    return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.update(await request.json())
    return web.json_response({k: v for k, v in state.items() if k != "seen"})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"requests": state["requests"], "active": state["active"],
                              "mode": state["mode"]})


async def infer(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state["requests"] += 1
    state["active"] += 1
    try:
        body = await request.json()
        mode = state["mode"]
        model = state["model"]
        delay = float(state.get("delay_s", 0.01))
        chunks = int(state.get("chunks", 5))
        if mode == "error500":
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "trickle":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            while True:
                await resp.write(b":")
                await asyncio.sleep(delay)
        if not body.get("stream"):
            await asyncio.sleep(delay)
            return web.json_response({
                "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(chunks):
            await resp.write(_chunk(model, i, f"t{i} "))
            await asyncio.sleep(delay)
        if mode == "die_midstream":
            await resp.write(b'data: {"half": ')
            os._exit(1)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    finally:
        state["active"] -= 1


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
                  "chunks": args.chunks, "requests": 0, "active": 0}
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(route, infer)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
