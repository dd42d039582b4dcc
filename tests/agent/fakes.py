"""A recording hub for the agent's tests (worker fakes are in tests/probing/fakes.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.probing.fakes import Server


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
