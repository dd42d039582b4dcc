"""The agent's HTTP client: light imports, total timeouts, error descriptions, keep-alive."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
from aiohttp import web

from agent.client import describe_error, fetch, open_pool
from agent.config import Secret, make_target
from agent.heartbeat import AUTH, UNAVAILABLE, HubClient
from agent.probe import probe
from hub.upstream import UpstreamConnectFailed, UpstreamProtocolError
from tests.agent.fakes import FakeHub, Server, fake_llamacpp
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
    # Of the hub, only the package's version string, the stdlib-only config checks and
    # the small client come along.
    hub = {m for m in modules if m == "hub" or m.startswith("hub.")}
    assert hub == {"hub", "hub.config", "hub.config.kit", "hub.upstream", "hub.upstream.errors",
                   "hub.upstream.http1", "hub.upstream.pool"}


def test_describe_error() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert describe_error(TimeoutError()) == "timed out"
    assert describe_error(UpstreamConnectFailed("x", refused)) == \
        "cannot connect: Connection refused"
    assert describe_error(UpstreamConnectFailed("connect timed out")) == "timed out"
    both = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
                   "[Errno 111] Connect call failed ('127.0.0.1', 1)")
    assert describe_error(UpstreamConnectFailed("x", both)) == \
        "cannot connect: Connection refused"
    dns = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert describe_error(UpstreamConnectFailed("x", dns)) == \
        "cannot connect: Name or service not known"
    assert describe_error(UpstreamProtocolError("bad")) == "UpstreamProtocolError"


async def test_localhost_refused_on_every_address() -> None:
    async with open_pool() as pool:
        status = await probe(pool, make_target("box", f"http://localhost:{free_port()}",
                                               "llamacpp", None, None), 5.0)
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
            loop = asyncio.get_running_loop()
            started = loop.time()
            status = await probe(pool, make_target("box", server.url, "llamacpp", None, None),
                                 0.3)
            reply = await HubClient(pool, server.url, "a", Secret("t"),
                                    timeout_s=0.5).heartbeat({})
            took = loop.time() - started
    finally:
        await server.stop()
    assert (status.reachable, status.healthy, status.detail) == (False, False, "timed out")
    assert (reply.outcome, reply.status, reply.detail) == (UNAVAILABLE, None, "timed out")
    assert took < 5


async def test_connections_are_kept_alive() -> None:
    server = Server(fake_llamacpp())
    await server.start()
    try:
        async with open_pool() as pool:
            target = make_target("box", server.url, "llamacpp", None, None)
            first = await probe(pool, target, 5.0)
            opened = pool.opened
            for _ in range(5):
                assert await probe(pool, target, 5.0) == first
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


async def test_fetch_sends_user_agent_and_body() -> None:
    seen: dict[str, str] = {}

    async def echo(request: web.Request) -> web.Response:
        seen["ua"] = request.headers.get("User-Agent", "")
        seen["body"] = await request.text()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/echo", echo)
    server = Server(app)
    await server.start()
    try:
        async with open_pool() as pool:
            status, body = await fetch(pool, "POST", f"{server.url}/echo", timeout_s=5,
                                       body=b'{"a": 1}')
    finally:
        await server.stop()
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert seen == {"ua": "spokehub-agent/0.1.0", "body": '{"a": 1}'}
