"""Spill-over with the hub in this process: the ``Proxy.spill_gate`` hook (a tenant the
gate refuses, e.g. over its budget, stays local), and local attempts that all fail.

The fallback provider is the OpenAI-compatible fault worker (a real process); the local
worker is an address where nothing listens (down), or a fault worker answering 500.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp.test_utils import TestClient, TestServer

from hub.config.schema import parse_config
from hub.runtime.keys import HUB
from hub.server.app import build_app
from tests.support.hubproc import FaultWorker
from tests.support.procs import free_port

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_tenant_the_gate_refuses_does_not_spill(
        make_fault: Callable[..., FaultWorker]) -> None:
    remote = make_fault("tiny-remote")
    config = parse_config({
        "health": {"interval_s": 60, "timeout_s": 1},
        "workers": [{"name": "w0", "url": f"http://127.0.0.1:{free_port()}"},
                    {"name": "cloud", "kind": "openai", "url": f"{remote.url}/v1",
                     "tier": "fallback", "model_map": {"tiny": "tiny-remote"}}],
        "spill": {"enabled": True}})
    app = build_app(config)
    async with TestClient(TestServer(app)) as client:
        proxy = app[HUB].proxy
        asked: list[str] = []

        def refuse(tenant: str) -> bool:
            asked.append(tenant)
            return False

        proxy.spill_gate = refuse
        resp = await client.post("/v1/chat/completions", json=BODY)
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "no_healthy_worker"
        assert asked == ["default"]  # auth off: the one tenant
        assert proxy.spills.counts == {}
        assert remote.stats()["requests"] == 0

        proxy.spill_gate = lambda tenant: True
        resp = await client.post("/v1/chat/completions", json=BODY)
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Spokehub-Tier"] == "fallback"
        assert resp.headers["X-Spokehub-Worker"] == "cloud"
        assert proxy.spills.get("no_local", "tiny") == 1
        assert remote.stats()["requests"] == 1


async def test_every_local_attempt_failing_spills_as_no_local(
        make_fault: Callable[..., FaultWorker]) -> None:
    """A local worker that is up but answers 500 (before any byte reached the client):
    the failover loop runs its course, then the request spills."""
    remote = make_fault("tiny-remote")
    local = make_fault("tiny", mode="error500")
    config = parse_config({
        "health": {"interval_s": 60, "timeout_s": 1},
        "workers": [{"name": "w0", "url": local.url},
                    {"name": "cloud", "kind": "openai", "url": f"{remote.url}/v1",
                     "tier": "fallback", "model_map": {"tiny": "tiny-remote"}}],
        "spill": {"models": {"tiny": True}}})
    app = build_app(config)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/v1/chat/completions", json={**BODY, "stream": True})
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Spokehub-Tier"] == "fallback"
        assert (await resp.read()).rstrip().endswith(b"data: [DONE]")
        assert app[HUB].proxy.spills.counts == {("no_local", "tiny"): 1}
        assert local.stats()["requests"] == 1  # tried first, and failed
        assert remote.stats()["requests"] == 1
