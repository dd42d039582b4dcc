"""The agent's HTTP client: light imports, total timeouts, keep-alive, who it says it is."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from aiohttp import web

from agent.client import HEADERS, USER_AGENT, open_pool
from agent.config import Secret, parse_config
from agent.daemon import Agent
from agent.heartbeat import AUTH, UNAVAILABLE, HubClient
from hub.probing import probe
from tests.agent.fakes import FakeHub
from tests.probing.fakes import Handler, Server, fake_llamacpp
from tests.support.procs import ROOT, free_port

HEAVY = ("aiohttp", "jwt", "prometheus_client", "multidict", "yarl")


def test_agent_runtime_does_not_import_aiohttp() -> None:
    code = ("import json, sys\n"
            "import agent.cli, agent.daemon\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    modules = set(json.loads(out))
    assert "aiohttp" not in modules
    assert not {m for m in modules if m.split(".")[0] in HEAVY}
    # Of the hub, only the package's version string, the stdlib-only config checks, the
    # small client and the probes that run over it come along.
    hub = {m for m in modules if m == "hub" or m.startswith("hub.")}
    assert hub == {"hub", "hub.config", "hub.config.kit", "hub.upstream", "hub.upstream.connection",
                   "hub.upstream.response", "hub.upstream.url", "hub.upstream.errors",
                   "hub.upstream.http1", "hub.upstream.pool", "hub.probing",
                   "hub.probing.http", "hub.probing.llamacpp", "hub.probing.ollama",
                   "hub.probing.openai", "hub.probing.result", "hub.probing.session"}


async def test_localhost_refused_on_every_address() -> None:
    async with open_pool() as pool:
        status = await probe(pool, "llamacpp", f"http://localhost:{free_port()}", HEADERS,
                             5.0)
    assert (status.reachable, status.detail) == (False, "cannot connect: Connection refused")


async def test_total_timeout_covers_a_server_that_never_answers() -> None:
    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application()
    app.router.add_get("/health", hang)
    app.router.add_post("/v1/agents/heartbeat", hang)
    server = Server(app)
    await server.start()
    try:
        async with open_pool() as pool:
            status = await probe(pool, "llamacpp", server.url, HEADERS, 0.3)
            reply = await HubClient(pool, server.url, "a", Secret("t"),
                                    timeout_s=0.5).heartbeat({})
    finally:
        await server.stop()
    assert (status.reachable, status.healthy, status.detail) == (False, False, "timed out")
    assert (reply.outcome, reply.status, reply.detail) == (UNAVAILABLE, None, "timed out")


async def test_connections_are_kept_alive() -> None:
    server = Server(fake_llamacpp())
    await server.start()
    try:
        async with open_pool() as pool:
            first = await probe(pool, "llamacpp", server.url, HEADERS, 5.0)
            opened = pool.opened
            for _ in range(5):
                assert await probe(pool, "llamacpp", server.url, HEADERS, 5.0) == first
            assert pool.opened == opened <= 3
    finally:
        await server.stop()
    assert first.healthy and first.slots_total == 4


@pytest.mark.parametrize("token", ["line\r\nX-Injected: 1", "caf\u00e9-token"])
async def test_unsendable_token_is_an_auth_failure_without_echo(token: str) -> None:
    hub = FakeHub(token=None)
    await hub.start()
    try:
        async with open_pool() as pool:
            reply = await HubClient(pool, hub.url, "a", Secret(token)).heartbeat({})
    finally:
        await hub.stop()
    assert reply.outcome == AUTH and reply.status is None
    assert token not in reply.detail and "token" in reply.detail
    assert hub.heartbeats == []


async def test_probes_and_heartbeats_say_who_sends_them() -> None:
    agents: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        agents.append(request.headers.get("User-Agent", ""))
        return await handler(request)

    llama = Server(fake_llamacpp())
    llama.app.middlewares.append(record)
    hub = FakeHub(token="t")
    hub.server.app.middlewares.append(record)
    await llama.start()
    await hub.start()
    try:
        config = parse_config({"hub_url": hub.url, "agent_id": "box", "gpu": "none",
                               "workers": [{"url": llama.url}]},
                              {"SPOKEHUB_AGENT_TOKEN": "t"})
        async with open_pool() as pool:
            reply = await Agent(config, pool).beat()
    finally:
        await hub.stop()
        await llama.stop()
    assert reply.ok and len(agents) >= 4  # /health, /v1/models, /slots, the heartbeat
    assert set(agents) == {USER_AGENT} and USER_AGENT == "spokehub-agent/0.1.0"
