"""In-test HTTP servers for the agent: a recording hub, a fake llama.cpp, a fake Ollama."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.procs import free_port


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


@dataclass
class Heartbeat:
    body: dict[str, Any]
    authorization: str | None
    at: float


@dataclass
class FakeHub:
    """Records heartbeats and deregistrations; answers from ``script`` first, then
    ``status`` (200 = accept every worker)."""

    token: str | None = "agent-token"
    status: int = 200
    script: list[int] = field(default_factory=list)
    interval_s: float | None = None
    reject: dict[str, str] = field(default_factory=dict)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    deletes: list[tuple[str, str | None]] = field(default_factory=list)
    server: Server = field(init=False)

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/agents/heartbeat", self._heartbeat)
        app.router.add_delete("/v1/agents/{agent_id}", self._delete)
        self.server = Server(app)
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> FakeHub:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _status(self, authorization: str | None) -> int:
        if self.script:
            return self.script.pop(0)
        if self.status == 200 and self.token is not None \
                and authorization != f"Bearer {self.token}":
            return 403
        return self.status

    async def _heartbeat(self, request: web.Request) -> web.Response:
        body = await request.json()
        auth = request.headers.get("Authorization")
        self.heartbeats.append(Heartbeat(body, auth, time.monotonic()))
        status = self._status(auth)
        self.answers.append(status)
        await self._notify()
        if status != 200:
            return web.json_response({"error": {"message": f"fake hub says {status}"}},
                                     status=status)
        names = [w["name"] for w in body.get("workers", [])]
        doc: dict[str, Any] = {
            "accepted": [n for n in names if n not in self.reject],
            "rejected": [{"name": n, "reason": r} for n, r in self.reject.items()
                         if n in names],
            "interval_s": self.interval_s if self.interval_s is not None
            else body["interval_s"]}
        return web.json_response(doc)

    async def _delete(self, request: web.Request) -> web.Response:
        self.deletes.append((request.match_info["agent_id"],
                             request.headers.get("Authorization")))
        await self._notify()
        return web.json_response({"deleted": request.match_info["agent_id"]})

    async def wait_for(self, cond: Callable[[FakeHub], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: cond(self))

        await asyncio.wait_for(wait(), timeout)

    def ok_count(self) -> int:
        return self.answers.count(200)


def fake_llamacpp(*, model: str = "fake", health: int = 200, slots: int = 4,
                  busy: int = 1, slots_status: int = 200) -> web.Application:
    app = web.Application()

    async def health_h(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if health == 200 else "loading"},
                                 status=health)

    async def models_h(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model,
                                                              "object": "model"}]})

    async def slots_h(_: web.Request) -> web.Response:
        if slots_status != 200:
            return web.json_response({"error": {"code": slots_status}}, status=slots_status)
        return web.json_response([{"id": i, "is_processing": i < busy}
                                  for i in range(slots)])

    async def props_h(_: web.Request) -> web.Response:
        return web.json_response({"total_slots": slots})

    app.router.add_get("/health", health_h)
    app.router.add_get("/v1/models", models_h)
    app.router.add_get("/slots", slots_h)
    app.router.add_get("/props", props_h)
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
    app = web.Application()

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
