"""In-test workers on 127.0.0.1: a fake llama.cpp (plain or router mode), a fake Ollama,
an OpenAI-compatible model list, and servers that answer what no worker should (a
redirect, an endless or oversized body)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from hub.probing import ProbeResult, probe
from hub.upstream import Pool
from tests.support.procs import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """An aiohttp app on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self, app: web.Application, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[Server]:
    """``app`` served on 127.0.0.1 for the length of the block."""
    server = Server(app)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def probe_app(pool: Pool, app: web.Application, kind: str = "llamacpp", *,
                    path: str = "", headers: dict[str, str] | None = None,
                    timeout_s: float = 5.0) -> ProbeResult:
    """Serve ``app`` for one probe of the worker at ``path`` below it."""
    async with serving(app) as server:
        return await probe(pool, kind, f"{server.url}{path}", headers, timeout_s)


HITS = web.AppKey("hits", Counter)  # path -> requests the fake answered


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[HITS][request.path] += 1
    return await handler(request)


def _app() -> web.Application:
    app = web.Application(middlewares=[_count])
    app[HITS] = Counter()
    return app


def padded(doc: Any, size: int) -> bytes:
    """``doc`` as JSON, padded with spaces to ``size`` bytes: still valid JSON, so only
    a client that refuses the whole answer can tell it apart from a small one."""
    raw = json.dumps(doc).encode()
    return raw + b" " * max(0, size - len(raw))


async def _answer(request: web.Request, doc: Any, status: int = 200, *, size: int = 0,
                  chunked: bool = False) -> web.StreamResponse:
    body = padded(doc, size)
    if not chunked:
        return web.Response(body=body, status=status, content_type="application/json")
    resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(0, len(body), 64 * 1024):
        await resp.write(body[i:i + 64 * 1024])
    await resp.write_eof()
    return resp


def fake_llamacpp(*, model: str = "fake", health: int = 200, slots: int = 4,
                  busy: int = 1, slots_status: int = 200,
                  router: Mapping[str, str] | None = None,
                  sizes: Mapping[str, int] | None = None,
                  chunked: bool = False) -> web.Application:
    """A llama-server's status endpoints. ``router`` (model -> status value) lists
    models as a server in router mode does; ``sizes`` pads the answer of a path to
    that many bytes (``chunked``: without a Content-Length)."""
    app = _app()
    sizes = sizes or {}

    def answer(request: web.Request, doc: Any, status: int = 200) -> Awaitable[
            web.StreamResponse]:
        return _answer(request, doc, status, size=sizes.get(request.path, 0), chunked=chunked)

    async def health_h(request: web.Request) -> web.StreamResponse:
        return await answer(request, {"status": "ok" if health == 200 else "loading"},
                            health)

    async def models_h(request: web.Request) -> web.StreamResponse:
        if router is not None:
            data = [{"id": name, "object": "model", "status": {"value": value}}
                    for name, value in router.items()]
        else:
            data = [{"id": model, "object": "model"}]
        return await answer(request, {"object": "list", "data": data})

    async def slots_h(request: web.Request) -> web.StreamResponse:
        if slots_status != 200:
            return await answer(request, {"error": {"code": slots_status}}, slots_status)
        return await answer(request, [{"id": i, "is_processing": i < busy}
                                      for i in range(slots)])

    async def props_h(request: web.Request) -> web.StreamResponse:
        return await answer(request, {"total_slots": slots})

    app.router.add_get("/health", health_h)
    app.router.add_get("/v1/models", models_h)
    app.router.add_get("/slots", slots_h)
    app.router.add_get("/props", props_h)
    return app


def redirecting(location: str, status: int = 302) -> web.Application:
    """Every GET answers ``status`` with ``Location: location`` (plus the path)."""
    app = _app()

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": f"{location}{request.path}"})

    app.router.add_get("/{tail:.*}", redirect)
    return app


def fake_openai(models: list[str], *, key: str | None = None) -> web.Application:
    """An OpenAI-compatible server's ``GET /v1/models``; with ``key``, only for it."""
    app = _app()

    async def models_h(request: web.Request) -> web.Response:
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"object": "list",
                                  "data": [{"id": m, "object": "model"} for m in models]})

    app.router.add_get("/v1/models", models_h)
    return app


OLLAMA_TAGS = {"models": [
    {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189,
     "digest": "a80c4f17acd5", "details": {"family": "llama", "parameter_size": "3.2B",
                                           "quantization_level": "Q4_K_M"}},
    {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 4683087332,
     "digest": "845dbda0ea48", "details": {"family": "qwen2"}},
]}
OLLAMA_PS = {"models": [
    {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 3179116544,
     "digest": "a80c4f17acd5", "expires_at": "2026-01-01T00:05:00Z",
     "size_vram": 3179116544},
]}


def fake_ollama(*, version: str = "0.5.7") -> web.Application:
    app = _app()

    async def version_h(_: web.Request) -> web.Response:
        return web.json_response({"version": version})

    async def tags_h(_: web.Request) -> web.Response:
        return web.json_response(OLLAMA_TAGS)

    async def ps_h(_: web.Request) -> web.Response:
        return web.json_response(OLLAMA_PS)

    app.router.add_get("/api/version", version_h)
    app.router.add_get("/api/tags", tags_h)
    app.router.add_get("/api/ps", ps_h)
    return app
