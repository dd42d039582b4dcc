"""A recording upstream for the security tests, run as a real process.

It answers every inference request with HTTP 200 whatever the body (so any 5xx
the hub gives is the hub's own), and remembers what it received: the path, the
headers and the body of the last ``--keep`` requests, read back with
``GET /_seen`` (``POST /_reset`` forgets them). It speaks enough of two worker
kinds for the hub's prober:

- llama.cpp / OpenAI: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``,
  ``/v1/completions``, ``/v1/embeddings`` (SSE when the body says ``"stream": true``);
- Ollama native: ``GET /api/version``, ``/api/tags``, ``/api/ps``, ``POST /api/chat``
  (NDJSON when streaming).

``--delay-s`` pauses before each answer (and between stream events).

Usage: python -m tests.security.upstream --port P --models a,b [--delay-s 0] [--keep 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.procs import ROOT, Proc, free_port, wait_http

STATE = web.AppKey("state", dict)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _model(doc: dict[str, Any]) -> str:
    model = doc.get("model")
    return model if isinstance(model, str) else "unknown"


def _chat(model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-rec", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _event(model: str, text: str) -> bytes:
    doc = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0,
           "model": model, "choices": [{"index": 0, "delta": {"content": text},
                                        "finish_reason": None}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def _record(request: web.Request, body: bytes) -> dict[str, Any]:
    state = request.app[STATE]
    state["requests"] += 1
    entry = {"path": request.path, "headers": dict(request.headers),
             "body": body.decode("utf-8", "replace")}
    seen: deque[dict[str, Any]] = state["seen"]
    seen.append(entry)
    return entry


async def infer(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    _record(request, body)
    doc = _loads(body)
    doc = doc if isinstance(doc, dict) else {}
    model = _model(doc)
    delay = float(state["delay_s"])
    if delay:
        await asyncio.sleep(delay)
    if request.path.endswith("/embeddings"):
        return web.json_response({"object": "list", "model": model, "data": [
            {"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    if doc.get("stream") is not True:
        return web.json_response(_chat(model))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(3):
        await resp.write(_event(model, f"t{i} "))
        if delay:
            await asyncio.sleep(delay)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def native_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    _record(request, body)
    doc = _loads(body)
    doc = doc if isinstance(doc, dict) else {}
    model = _model(doc)
    final = {"model": model, "created_at": "2024-01-01T00:00:00Z",
             "message": {"role": "assistant", "content": ""}, "done": True,
             "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 1}
    if state["delay_s"]:
        await asyncio.sleep(float(state["delay_s"]))
    if doc.get("stream") is not True:
        final["message"] = {"role": "assistant", "content": "ok"}
        return web.json_response(final)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    part = {"model": model, "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "ok"}, "done": False}
    await resp.write(json.dumps(part).encode() + b"\n")
    await resp.write(json.dumps(final).encode() + b"\n")
    await resp.write_eof()
    return resp


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def v1_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": m, "object": "model"} for m in request.app[STATE]["models"]]})


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": "0.5.7"})


async def tags(request: web.Request) -> web.Response:
    return web.json_response({"models": [{"name": m, "model": m}
                                         for m in request.app[STATE]["models"]]})


async def ps(request: web.Request) -> web.Response:
    return web.json_response({"models": []})


async def seen(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"requests": state["requests"], "seen": list(state["seen"])})


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state["seen"].clear()
    state["requests"] = 0
    return web.json_response({"ok": True})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--models", default="rec-model")
    ap.add_argument("--delay-s", type=float, default=0.0)
    ap.add_argument("--keep", type=int, default=2000)
    args = ap.parse_args()
    app = web.Application(client_max_size=1 << 26)
    app[STATE] = {"models": [m for m in args.models.split(",") if m],
                  "delay_s": args.delay_s, "requests": 0, "seen": deque(maxlen=args.keep)}
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", v1_models)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/chat", native_chat)
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(route, infer)
    app.router.add_get("/_seen", seen)
    app.router.add_post("/_reset", reset)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


class RecordingUpstream:
    """This module as a real process (stopped by PID)."""

    def __init__(self, workdir: Path, models: tuple[str, ...] = ("rec-model",),
                 delay_s: float = 0.0) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "tests.security.upstream", "--port", str(self.port),
                "--models", ",".join(models), "--delay-s", str(delay_s)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = Proc(argv, workdir / f"upstream-{self.port}.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingUpstream:
        self.proc.start()
        wait_http(f"{self.url}/health", self.proc.proc, timeout=30)
        return self

    def seen(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/_seen", timeout=5) as resp:
            out: list[dict[str, Any]] = json.load(resp)["seen"]
            return out

    def count(self) -> int:
        """Inference requests received so far (all routes)."""
        with urllib.request.urlopen(f"{self.url}/_seen", timeout=5) as resp:
            n: int = json.load(resp)["requests"]
            return n

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/_reset", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def stop(self) -> None:
        self.proc.stop()


if __name__ == "__main__":
    main()
