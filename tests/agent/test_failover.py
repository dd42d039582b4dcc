"""Several hubs (``hub_urls``): the choice of hub, the config, and the heartbeat loop
failing over between two in-test hubs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.client import open_pool
from agent.config import AgentConfig, parse_config
from agent.daemon import Agent
from agent.failover import HubChooser, Switch
from hub.config.kit import ConfigError
from tests.agent.fakes import FakeHub
from tests.probing.fakes import Server, fake_llamacpp

TOKEN = "agent-token"
ENV = {"SPOKEHUB_AGENT_TOKEN": TOKEN}


# -- the choice ------------------------------------------------------------------------


def test_sticky_then_next_on_failure_and_wraps() -> None:
    c = HubChooser(3, failback_s=60)
    assert c.index == 0 and c.before_attempt(0.0) is None
    assert c.failed(1.0) == Switch(0, 1, "failover")
    assert c.index == 1
    assert c.failed(2.0) == Switch(1, 2, "failover")
    assert c.failed(3.0) == Switch(2, 0, "failover")
    assert c.before_attempt(1000.0) is None  # back on the preferred one: nothing to do


def test_one_hub_never_switches() -> None:
    c = HubChooser(1, failback_s=60)
    assert c.failed(1.0) is None and c.index == 0
    with pytest.raises(ValueError):
        HubChooser(0, failback_s=60)


def test_failback_after_failback_s_away_from_the_preferred_hub() -> None:
    c = HubChooser(2, failback_s=60)
    c.failed(100.0)  # 0 -> 1 at t=100
    assert c.before_attempt(159.9) is None and c.index == 1
    assert c.before_attempt(160.0) == Switch(1, 0, "failback") and c.index == 0
    # the preferred hub is still down: straight on to the next, and the clock restarts
    assert c.failed(160.0) == Switch(0, 1, "failover")
    assert c.before_attempt(219.0) is None
    assert c.before_attempt(220.0) == Switch(1, 0, "failback")


# -- config ------------------------------------------------------------------------------


def parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> AgentConfig:
    return parse_config({"agent_id": "box", "gpu": "none", **raw}, {**ENV, **(env or {})})


def test_hub_urls_list_and_hub_url_alone() -> None:
    cfg = parse({"hub_urls": ["http://a:8080/", "https://b:8443"], "hub_failback_s": 30})
    assert cfg.hubs == ("http://a:8080", "https://b:8443")
    assert cfg.hub_url == "http://a:8080" and cfg.hub_failback_s == 30
    one = parse({"hub_url": "http://a:8080"})
    assert one.hubs == ("http://a:8080",) and one.hub_failback_s == 120


def test_hub_urls_from_the_environment() -> None:
    cfg = parse({"hub_url": "http://file:1"},
                {"SPOKEHUB_HUB_URL": "http://a:1, http://b:2"})
    assert cfg.hubs == ("http://a:1", "http://b:2")


@pytest.mark.parametrize(("raw", "env", "message"), [
    ({"hub_url": "http://a:1", "hub_urls": ["http://b:1"]}, {}, "hub_urls: set hub_url or"),
    ({"hub_urls": []}, {}, "hub_urls: must be a non-empty list"),
    ({"hub_urls": "http://a:1"}, {}, "hub_urls: must be a non-empty list"),
    ({"hub_urls": ["http://a:1", 3]}, {}, "hub_urls[1]: must be a non-empty string"),
    ({"hub_urls": ["http://a:1", "ftp://b"]}, {}, "hub_urls[1]: must be an http://"),
    ({"hub_urls": ["http://a:1", "http://a:1/"]}, {}, "hub_urls[1]: http://a:1 is listed twice"),
    ({"hub_urls": [f"http://h{i}:1" for i in range(17)]}, {}, "hub_urls: at most 16"),
    ({"hub_url": "http://a:1", "hub_failback_s": 0}, {}, "hub_failback_s: must be between"),
    ({}, {"SPOKEHUB_HUB_URL": "http://a:1,,http://b:1"}, "SPOKEHUB_HUB_URL: an empty URL"),
])
def test_hub_urls_errors_name_the_key(raw: dict[str, Any], env: dict[str, str],
                                      message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(raw, env)
    assert message in str(exc.value)


# -- the loop, against two hubs -----------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(min(delay, 0.01))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def worker() -> AsyncIterator[Server]:
    server = Server(fake_llamacpp(model="fake", slots=4, busy=0))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def hubs() -> AsyncIterator[tuple[FakeHub, FakeHub]]:
    a, b = FakeHub(token=TOKEN), FakeHub(token=TOKEN)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


def two_hub_config(a: str, b: str, worker: Server) -> AgentConfig:
    return parse({"hub_urls": [a, b], "heartbeat_s": 1, "hub_failback_s": 60,
                  "workers": [{"url": worker.url}]})


async def test_fails_over_on_5xx_at_once_and_logs_once(
        hubs: tuple[FakeHub, FakeHub], worker: Server,
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = hubs
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(two_hub_config(a.url, b.url, worker), pool, sleep=Sleeps())
        assert (await agent.beat()).ok and a.ok_count() == 1 and not b.heartbeats
        assert (await agent.beat()).ok and a.ok_count() == 2  # sticky
        a.status = 503
        reply = await agent.beat()  # A says 503: the same heartbeat goes on to B
        assert reply.ok and a.answers[-1] == 503 and b.ok_count() == 1
        a.status = 200
        for _ in range(3):  # stays on B although A is back (until the failback time)
            assert (await agent.beat()).ok
        assert b.ok_count() == 4 and a.answers.count(200) == 2
    messages = [r.getMessage() for r in caplog.records]
    switches = [m for m in messages if "failing over" in m]
    assert switches == [f"hub {a.url} unavailable (HTTP 503: fake hub says 503); "
                        f"failing over to {b.url}"]
    assert sum(m.startswith(f"registered with hub {b.url}") for m in messages) == 1


async def test_connection_refused_fails_over_and_failback_returns(
        worker: Server, caplog: pytest.LogCaptureFixture) -> None:
    a, b = FakeHub(token=TOKEN), FakeHub(token=TOKEN)
    await b.start()  # A is not started: connection refused
    clock = Clock()
    caplog.set_level(logging.INFO, "spokehub.agent")
    try:
        async with open_pool() as pool:
            agent = Agent(two_hub_config(a.url, b.url, worker), pool, sleep=Sleeps(),
                          clock=clock)
            assert (await agent.beat()).ok and b.ok_count() == 1
            clock.now += 59
            assert (await agent.beat()).ok and b.ok_count() == 2
            await a.start()
            clock.now += 1  # 60 s away from A: the next heartbeat tries A again
            assert (await agent.beat()).ok
            assert a.ok_count() == 1 and b.ok_count() == 2
            assert (await agent.beat()).ok and a.ok_count() == 2
            reply = await agent.deregister()  # from both: each took heartbeats
            assert reply is not None and reply.ok
    finally:
        await a.stop()
        await b.stop()
    assert [d[0] for d in a.deletes] == ["box"] and [d[0] for d in b.deletes] == ["box"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failing over" in m for m in messages) == 1
    assert sum("going back to the preferred hub" in m for m in messages) == 1


async def test_all_hubs_down_backs_off_and_logs_once(worker: Server,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    a, b = FakeHub(token=TOKEN), FakeHub(token=TOKEN)  # neither started
    sleeps = Sleeps()
    caplog.set_level(logging.INFO, "spokehub.agent")
    async with open_pool() as pool:
        agent = Agent(two_hub_config(a.url, b.url, worker), pool, sleep=sleeps,
                      rng=lambda: 1.0)
        task = asyncio.create_task(agent.run())
        for _ in range(500):
            if len(sleeps.delays) >= 4:
                break
            await asyncio.sleep(0.01)
        await b.start()
        try:
            await b.wait_for(lambda h: h.ok_count() >= 1)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await b.stop()
    assert sleeps.delays[:3] == [1, 1, 1]  # backoff capped at the heartbeat interval
    messages = [r.getMessage() for r in caplog.records]
    assert sum("retrying with backoff" in m for m in messages) == 1
    assert sum("failing over" in m for m in messages) == 1
    assert sum(f"hub (every one: {a.url}, {b.url}) unavailable" in m for m in messages) == 1


async def test_a_refusal_does_not_fail_over(hubs: tuple[FakeHub, FakeHub],
                                            worker: Server) -> None:
    a, b = hubs
    a.status = 403  # the hub answered: another hub would say the same
    async with open_pool() as pool:
        agent = Agent(two_hub_config(a.url, b.url, worker), pool, sleep=Sleeps())
        reply = await agent.beat()
    assert reply.outcome == "auth" and not b.heartbeats
