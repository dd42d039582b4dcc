"""The heartbeat loop against an in-test hub: body, auth, backoff, re-registration,
403 handling, token rotation and deregistration on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.client import open_pool
from agent.config import AgentConfig, Secret, parse_config
from agent.daemon import Agent
from agent.gpu import GpuReader
from agent.heartbeat import Backoff, HubClient, build_heartbeat, parse_reply
from agent.host import HostInfo
from agent.targets import make_target
from tests.agent.fakes import FakeHub
from tests.probing.fakes import Server, fake_llamacpp, fake_ollama
from tests.support.llama import LlamaWorker
from tests.support.procs import ROOT, free_port

TOKEN = "agent-token"


# -- backoff ---------------------------------------------------------------------------


def test_backoff_schedule_with_injected_rng() -> None:
    low = Backoff(rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 15, 15, 15]
    high = Backoff(rng=lambda: 1.0)
    assert [high.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    high.reset()
    assert high.next_delay() == 1
    seeded = Backoff(rng=random.Random(7).random)
    delays = [seeded.next_delay() for _ in range(12)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays[5:])) == 7, "capped retries are still spread out"
    assert Backoff(rng=lambda: 0.5, attempt=10_000).next_delay() == 22.5  # no overflow


def test_parse_reply_is_defensive() -> None:
    assert parse_reply({"accepted": ["a", 1], "rejected": [{"name": "b", "reason": "dup"},
                                                           "junk"], "interval_s": 0.01}) \
        == (("a",), (("b", "dup"),), 0.5)
    assert parse_reply({"interval_s": 10_000}) == ((), (), 300.0)
    assert parse_reply("nope") == ((), (), None)
    assert parse_reply({"interval_s": True}) == ((), (), None)


# -- helpers ---------------------------------------------------------------------------


class Sleeps:
    """Injected sleep: records the requested delays, waits only a moment."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(min(delay, 0.01))


@pytest.fixture
async def worker() -> AsyncIterator[Server]:
    server = Server(fake_llamacpp(model="fake", slots=4, busy=1))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    fake = FakeHub(token=TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


def config(hub_url: str, worker: Server, **extra: Any) -> AgentConfig:
    raw = {"hub_url": hub_url, "agent_id": "gpu-box-1", "advertise_host": "10.0.0.5",
           "heartbeat_s": 1, "gpu": "none",
           "workers": [{"url": worker.url, "kind": "llamacpp"}], **extra}
    env = {} if "token_file" in extra else {"SPOKEHUB_AGENT_TOKEN": TOKEN}
    return parse_config(raw, env)


async def running(agent: Agent) -> asyncio.Task[None]:
    return asyncio.create_task(agent.run())


async def stop(task: asyncio.Task[None]) -> None:
    assert not task.done(), "the heartbeat loop must never stop by itself"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the loop --------------------------------------------------------------------------


async def test_heartbeat_body_and_auth(hub: FakeHub, worker: Server) -> None:
    sleeps = Sleeps()
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker), pool, sleep=sleeps)
        task = await running(agent)
        await hub.wait_for(lambda h: h.ok_count() >= 2)
        await stop(task)
    beat = hub.heartbeats[0]
    assert beat.authorization == f"Bearer {TOKEN}"
    body = beat.body
    assert set(body) == {"agent_id", "version", "interval_s", "host", "workers"}
    assert (body["agent_id"], body["version"], body["interval_s"]) == ("gpu-box-1", "0.1.0", 1)
    host = body["host"]
    assert set(host) == {"hostname", "gpus", "ram_total_mb", "ram_available_mb",
                         "cpu_count", "load1"}
    assert host["gpus"] == [] and isinstance(host["ram_total_mb"], int)
    assert isinstance(host["cpu_count"], int) and isinstance(host["load1"], float)
    assert body["workers"] == [{
        "name": f"gpu-box-1-llamacpp-{worker.port}", "url": f"http://10.0.0.5:{worker.port}",
        "kind": "llamacpp", "models": ["fake"], "loaded_models": ["fake"], "slots_total": 4,
        "slots_busy": 1, "healthy": True, "vram_free_mb": None}]
    assert agent.last_reply is not None and agent.last_reply.accepted == (
        f"gpu-box-1-llamacpp-{worker.port}",)
    # On success the loop waits out the rest of the interval, never a backoff.
    assert all(0 <= d <= 1 for d in sleeps.delays)


async def test_retries_503_with_backoff_then_reregisters(
        hub: FakeHub, worker: Server, caplog: pytest.LogCaptureFixture) -> None:
    hub.script = [503, 503, 502, 500]
    sleeps = Sleeps()
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker, heartbeat_s=8), pool, sleep=sleeps,
                      rng=lambda: 0.0)
        task = await running(agent)
        await hub.wait_for(lambda h: h.ok_count() >= 3)
        await stop(task)
    assert hub.answers[:5] == [503, 503, 502, 500, 200]
    assert sleeps.delays[:4] == [0.5, 1.0, 2.0, 4.0]  # backoff, rng pinned low
    assert all(d <= 8 for d in sleeps.delays[4:])  # back to the interval
    assert agent.backoff.attempt == 0
    # One line per state change: 503 -> 502 -> 500 are three states, then registered.
    messages = [r.getMessage() for r in caplog.records]
    unavailable = [m for m in messages if "unavailable" in m]
    assert len(unavailable) == 3 and "HTTP 503: fake hub says 503" in unavailable[0]
    registered = [m for m in messages if m.startswith("registered with hub")]
    assert len(registered) == 1 and "after 4 failed attempt(s)" in registered[0]


async def test_hub_down_then_up(worker: Server, caplog: pytest.LogCaptureFixture) -> None:
    hub = FakeHub(token=TOKEN)  # not started: connection refused
    sleeps = Sleeps()
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker, heartbeat_s=5), pool, sleep=sleeps,
                      rng=lambda: 1.0)
        task = await running(agent)
        for _ in range(500):
            if len(sleeps.delays) >= 6:
                break
            await asyncio.sleep(0.01)
        # backoff, capped at the heartbeat interval while the hub is unreachable
        assert sleeps.delays[:6] == [1, 2, 4, 5, 5, 5]
        await hub.start()
        try:
            await hub.wait_for(lambda h: h.ok_count() >= 1)
            await stop(task)
        finally:
            await hub.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable (cannot connect: Connection refused)" in m
               for m in messages) == 1
    assert any(m.startswith("registered with hub") for m in messages)


async def test_403_keeps_running_and_logs_once(hub: FakeHub, worker: Server,
                                               caplog: pytest.LogCaptureFixture) -> None:
    hub.status = 403
    sleeps = Sleeps()
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker), pool, sleep=sleeps, rng=lambda: 1.0)
        task = await running(agent)
        await hub.wait_for(lambda h: len(h.heartbeats) >= 8)
        assert not task.done()
        assert sleeps.delays[:8] == [1, 2, 4, 8, 16, 30, 30, 30]
        refused = [r for r in caplog.records if "refused the agent token" in r.getMessage()]
        assert len(refused) == 1 and refused[0].levelno == logging.ERROR
        assert "HTTP 403" in refused[0].getMessage()
        hub.status = 200  # e.g. the hub operator fixed the token's scope
        await hub.wait_for(lambda h: h.ok_count() >= 1)
        await stop(task)


async def test_rotated_token_file_is_picked_up(hub: FakeHub, worker: Server,
                                               tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    token_file.chmod(0o600)
    sleeps = Sleeps()
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker, token_file=str(token_file)), pool,
                      sleep=sleeps)
        task = await running(agent)
        await hub.wait_for(lambda h: len(h.heartbeats) >= 2)
        assert hub.ok_count() == 0
        token_file.write_text(f"{TOKEN}\n")
        await hub.wait_for(lambda h: h.ok_count() >= 1)
        await stop(task)
    assert hub.heartbeats[0].authorization == "Bearer old-token"
    assert hub.heartbeats[-1].authorization == f"Bearer {TOKEN}"


async def test_rejections_interval_and_deregister(hub: FakeHub, worker: Server,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    name = f"gpu-box-1-llamacpp-{worker.port}"
    hub.reject = {name: "model not allowed"}
    hub.interval_s = 2.5
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker), pool, sleep=Sleeps())
        task = await running(agent)
        await hub.wait_for(lambda h: h.ok_count() >= 3)
        await stop(task)
        assert agent.interval_s == 2.5
        assert hub.heartbeats[-1].body["interval_s"] == 2.5
        reply = await agent.deregister()
    assert reply is not None and reply.ok
    assert hub.deletes == [("gpu-box-1", f"Bearer {TOKEN}")]
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(f"hub rejected worker {name}: model not allowed") == 1
    assert messages.count("hub asks for a heartbeat every 2.5s (was 1s)") == 1


async def test_deregister_with_hub_down_does_not_raise(worker: Server) -> None:
    async with open_pool() as pool:
        agent = Agent(config(f"http://127.0.0.1:{free_port()}", worker), pool)
        reply = await agent.deregister()
    assert reply is not None and not reply.ok


async def test_worker_state_changes_logged_once(hub: FakeHub,
                                                caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    llama = Server(fake_llamacpp(), port=port)
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(config(hub.url, llama), pool, sleep=Sleeps())
        task = await running(agent)
        await hub.wait_for(lambda h: h.ok_count() >= 3)
        await llama.start()
        try:
            await hub.wait_for(lambda h: h.heartbeats[-1].body["workers"][0]["healthy"])
            await hub.wait_for(lambda h: h.ok_count() >= 8)
        finally:
            await llama.stop()
        await stop(task)
    worker_lines = [r.getMessage() for r in caplog.records if "worker gpu-box" in
                    r.getMessage()]
    assert len(worker_lines) == 2, worker_lines
    assert "down" in worker_lines[0] and "Connection refused" in worker_lines[0]
    assert worker_lines[1].startswith(f"worker gpu-box-1-llamacpp-{port} up")


async def test_discovery_reports_only_answering_ports(hub: FakeHub,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ollama = Server(fake_ollama())
    await ollama.start()
    try:
        raw = {"hub_url": hub.url, "agent_id": "box", "gpu": "none"}
        cfg = parse_config(raw, {"SPOKEHUB_AGENT_TOKEN": TOKEN})
        # Point the discovery candidates at a closed port and the fake Ollama.
        closed = f"http://127.0.0.1:{free_port()}"
        targets = (make_target("box", closed, "llamacpp", None, None, discovered=True),
                   make_target("box", ollama.url, "ollama", None, None, discovered=True))
        monkeypatch.setattr(AgentConfig, "targets", lambda self: targets)
        async with open_pool() as pool:
            agent = Agent(cfg, pool)
            payload = await agent.collect()
    finally:
        await ollama.stop()
    assert [w["kind"] for w in payload["workers"]] == ["ollama"]
    assert payload["workers"][0]["loaded_models"] == ["llama3.2:latest"]


async def test_gpu_numbers_reach_the_workers(hub: FakeHub, worker: Server,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA L4, 23034, 1200, 21834, 12, 41'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker, gpu="auto"), pool)
        payload = await agent.collect()
    assert payload["host"]["gpus"] == [{"index": 0, "name": "NVIDIA L4",
                                        "vram_total_mb": 23034, "vram_used_mb": 1200,
                                        "vram_free_mb": 21834, "util_pct": 12.0,
                                        "temp_c": 41.0}]
    assert payload["workers"][0]["vram_free_mb"] == 21834


async def test_a_crashing_collector_does_not_stop_the_loop(
        hub: FakeHub, worker: Server, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    class Flaky(GpuReader):
        async def read(self) -> Any:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RuntimeError("boom")
            return await super().read()

    sleeps = Sleeps()
    async with open_pool() as pool:
        agent = Agent(config(hub.url, worker, heartbeat_s=5), pool,
                      gpu_reader=Flaky("none"), sleep=sleeps, rng=lambda: 0.0)
        task = await running(agent)
        await hub.wait_for(lambda h: h.ok_count() >= 1)
        await stop(task)
    assert sleeps.delays[:2] == [0.5, 1.0]
    assert sum("heartbeat failed" in r.getMessage() for r in caplog.records) == 1


def test_build_heartbeat_numbers() -> None:
    doc = build_heartbeat("a", "1", 2.0, HostInfo("h"), [])
    assert doc["interval_s"] == 2 and isinstance(doc["interval_s"], int)
    assert build_heartbeat("a", "1", 0.5, HostInfo("h"), [])["interval_s"] == 0.5


async def test_hub_client_classifies_answers() -> None:
    statuses = iter([400, 429, 401, 200])

    async def handler(_: web.Request) -> web.Response:
        status = next(statuses)
        body = "not json" if status == 200 else '{"detail": "nope"}'
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_post("/v1/agents/heartbeat", handler)
    server = Server(app)
    await server.start()
    try:
        async with open_pool() as pool:
            client = HubClient(pool, server.url + "/", "a", Secret("t"))
            outcomes = [(await client.heartbeat({})) for _ in range(4)]
    finally:
        await server.stop()
    assert [(r.outcome, r.status) for r in outcomes] == [
        ("refused", 400), ("unavailable", 429), ("auth", 401), ("ok", 200)]
    assert outcomes[0].detail == "HTTP 400: nope"
    assert outcomes[3].accepted == () and outcomes[3].interval_s is None


# -- the real process: SIGTERM / SIGINT ------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_process_deregisters_and_exits_0(sig: signal.Signals, hub: FakeHub,
                                               make_llama: Callable[..., LlamaWorker],
                                               tmp_path: Path) -> None:
    llama = make_llama("tiny", slots=2)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"hub_url: {hub.url}\nagent_id: gpu-box-1\nheartbeat_s: 0.2\n"
                   f"advertise_host: 10.0.0.5\nworkers:\n  - url: {llama.url}\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPOKEHUB_AGENT_TOKEN_FILE": str(token_file)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "--config", str(cfg), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await hub.wait_for(lambda h: h.ok_count() >= 3, timeout=30)
        proc.send_signal(sig)
        await hub.wait_for(lambda h: len(h.deletes) >= 1)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert hub.deletes == [("gpu-box-1", f"Bearer {TOKEN}")]
    worker = hub.heartbeats[-1].body["workers"][0]
    assert (worker["url"], worker["models"], worker["slots_total"], worker["healthy"]) == \
        (f"http://10.0.0.5:{llama.port}", ["tiny"], 2, True)
    assert TOKEN not in log and out == b""
    lines = log.splitlines()
    # Quiet by design: start, GPU note, worker up, registered, signal, deregistered.
    assert len(lines) <= 7, log
    assert f"received {sig.name}" in log and "deregistered from hub" in log
    assert "Traceback" not in log


async def test_process_survives_auth_failure_until_stopped(tmp_path: Path,
                                                           worker: Server) -> None:
    hub = FakeHub(token="the-right-one")
    await hub.start()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"hub_url: {hub.url}\nagent_id: box\nheartbeat_s: 0.2\ngpu: none\n"
                   f"workers:\n  - url: {worker.url}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPOKEHUB_AGENT_TOKEN": "wrong"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "--config", str(cfg), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await hub.wait_for(lambda h: len(h.heartbeats) >= 2, timeout=30)
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await hub.stop()
    assert proc.returncode == 0
    assert err.decode().count("refused the agent token") == 1
    assert "wrong" not in err.decode()


async def test_pool_is_never_proxied(hub: FakeHub, worker: Server,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.Response(status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    proxy = Server(app)
    await proxy.start()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with open_pool() as pool:
            agent = Agent(config(hub.url, worker), pool)
            reply = await agent.beat()
    finally:
        await proxy.stop()
    assert reply.ok and hub.ok_count() == 1
    assert hub.heartbeats[0].body["workers"][0]["healthy"]
    assert seen == []
