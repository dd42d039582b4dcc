"""Two hubs' fleet state through one real redis-server, in this process: agent
workers, drain flags and breaker transitions applied at the other hub; reports
checked again on receipt; an outage, and the resync after it."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.auth.principal import Principal
from hub.config.schema import Agents, WorkerSpec
from hub.fleet.agents import AgentBook
from hub.fleet.registry import Registry, Worker
from hub.resilience.breaker import BreakerConfig, Breakers, Outcome, State
from hub.state.config import StateConfig
from hub.state.redis_link import RedisLink
from hub.state.shared import SharedState
from tests.state.conftest import eventually
from tests.support.procs import free_port
from tests.support.redis_proc import RedisServer

STATIC = (WorkerSpec(name="w0", url="http://127.0.0.1:9"),)
BREAKER = BreakerConfig(consecutive_failures=3, cooldown_s=30.0)


@dataclass
class MiniHub:
    """What a hub shares, without the HTTP parts: registry, agents, breakers."""

    registry: Registry
    agents: AgentBook
    breakers: Breakers
    shared: SharedState

    @property
    def link(self) -> RedisLink:
        return self.shared.link

    def worker(self, name: str) -> Worker | None:
        return self.registry.get(name)


def mini_hub(url: str, namespace: str, hub_id: str,
             breaker: BreakerConfig = BREAKER) -> MiniHub:
    registry = Registry(STATIC)
    agents = AgentBook(registry, Agents(enabled=True, ttl_s=15, remove_after_s=600))
    breakers = Breakers(breaker)
    link = RedisLink(url, namespace, hub_id=hub_id, backoff_s=(0.05, 0.3))
    shared = SharedState(StateConfig(backend="redis", namespace=namespace), link)
    shared.attach(agents, registry, lambda: breakers)
    return MiniHub(registry, agents, breakers, shared)


Factory = Callable[..., Awaitable[MiniHub]]


@pytest.fixture
async def hubs(redis_server: RedisServer) -> AsyncIterator[Factory]:
    made: list[MiniHub] = []
    ns = f"t{secrets.token_hex(4)}"

    async def make(hub_id: str, url: str | None = None, start: bool = True,
                   **kw: Any) -> MiniHub:
        hub = mini_hub(url or redis_server.url, ns, hub_id, **kw)
        made.append(hub)
        if start:
            await hub.shared.start()
        return hub

    yield make
    for hub in made:
        await hub.shared.stop()


def principal(sub: str = "box-token", models: list[str] | None = None) -> Principal:
    return Principal(sub=sub, tenant=sub, scopes=frozenset({"agent"}),
                     models=None if models is None else frozenset(models))


def beat(agent_id: str, port: int, models: tuple[str, ...] = ("m1",)) -> dict[str, Any]:
    return {"agent_id": agent_id, "host": {"hostname": agent_id}, "workers": [
        {"url": f"http://127.0.0.1:{port}", "kind": "llamacpp", "models": list(models),
         "slots_total": 2, "slots_busy": 1}]}


async def test_agent_worker_registered_at_one_hub_is_registered_at_the_other(
        hubs: Factory) -> None:
    a, b = await hubs("a"), await hubs("b")
    result = await a.agents.heartbeat(beat("box1", 8081), principal())
    assert result.accepted == ["box1-llamacpp-8081"]
    await eventually(lambda: b.worker("box1-llamacpp-8081") is not None,
                     what="worker at hub b")
    w = b.worker("box1-llamacpp-8081")
    assert w is not None and w.source == "agent:box1" and w.models == {"m1"}
    assert w.last_seen == a.agents.records["box1"].last_seen and w.slots_total == 2
    assert b.agents.records["box1"].owner == "box-token"
    # the owner rule holds across hubs: another token cannot take the id at b
    with pytest.raises(Exception, match="another agent token"):
        await b.agents.heartbeat(beat("box1", 8082), principal("thief"))
    # a heartbeat at b that drops the worker for another removes it at a too
    await b.agents.heartbeat(beat("box1", 8083), principal())
    await eventually(lambda: a.worker("box1-llamacpp-8081") is None
                     and a.worker("box1-llamacpp-8083") is not None, what="moved at a")
    # a hub that joins later reads the fleet at start
    c = await hubs("c")
    assert c.worker("box1-llamacpp-8083") is not None
    # deregistration propagates
    a.agents.deregister("box1", "box-token")
    await eventually(lambda: b.worker("box1-llamacpp-8083") is None
                     and c.worker("box1-llamacpp-8083") is None, what="deregistered")


async def test_shared_reports_are_checked_like_heartbeats(hubs: Factory) -> None:
    """A report in the store or on the channel is no more trusted than an agent: a URL
    outside agents.allowed_networks, a model the owner's token does not allow, or a
    malformed record, registers nothing."""
    b = await hubs("b")
    link = b.link
    bad: list[dict[str, Any]] = [
        {"op": "put", "hub": "evil", "agent_id": "x1", "owner": "t", "last_seen": 1e12,
         "token_models": None, "host": None,
         "workers": [{"url": "http://169.254.169.254/", "kind": "llamacpp",
                      "models": ["m1"]}]},
        {"op": "put", "hub": "evil", "agent_id": "x2", "owner": "t", "last_seen": 1e12,
         "token_models": ["allowed"], "host": None,
         "workers": [{"url": "http://127.0.0.1:7001", "kind": "llamacpp",
                      "models": ["other"]}]},
        {"op": "put", "hub": "evil", "agent_id": "../x3", "owner": "t", "last_seen": 1e12,
         "workers": []},
        {"op": "put", "hub": "evil", "agent_id": "x4", "owner": "t", "last_seen": "now",
         "workers": []},
    ]
    for doc in bad:
        await link.client.publish(link.channel("agents"), json.dumps(doc).encode())
        await link.client.set(link.key("agent", str(doc["agent_id"])), json.dumps(doc))
    good = {**bad[1], "agent_id": "ok1", "token_models": ["other"]}
    await link.client.publish(link.channel("agents"), json.dumps(good).encode())
    await eventually(lambda: b.worker("ok1-llamacpp-7001") is not None, what="good report")
    assert [w.name for w in b.registry if w.source != "config"] == ["ok1-llamacpp-7001"]
    # the same bad records through a resync (a hub starting now) register nothing either
    c = await hubs("c")
    assert [w.name for w in c.registry if w.source != "config"] == []


async def test_drain_at_one_hub_drains_at_every_hub(hubs: Factory) -> None:
    a, b = await hubs("a"), await hubs("b")
    wa, wb = a.worker("w0"), b.worker("w0")
    assert wa is not None and wb is not None
    a.registry.set_draining(wa, True)
    await eventually(lambda: wb.draining, what="drained at b")
    b.registry.set_draining(wb, False)
    await eventually(lambda: not wa.draining, what="undrained at a")
    # a drained agent worker that appears at a hub only later is drained there at once
    await a.agents.heartbeat(beat("box2", 8090), principal())
    await eventually(lambda: b.worker("box2-llamacpp-8090") is not None)
    w2 = a.worker("box2-llamacpp-8090")
    assert w2 is not None
    a.registry.set_draining(w2, True)
    c = await hubs("c")
    w2c = c.worker("box2-llamacpp-8090")
    assert w2c is not None and w2c.draining


async def test_breaker_opened_at_one_hub_opens_at_the_other_and_closes_with_it(
        hubs: Factory) -> None:
    quick = BreakerConfig(consecutive_failures=3, cooldown_s=0.3)
    a, b = await hubs("a", breaker=quick), await hubs("b", breaker=quick)
    for _ in range(3):
        a.breakers.get("w0").record(Outcome.FAILURE)
    assert a.breakers.get("w0").state is State.OPEN
    await eventually(lambda: b.breakers.get("w0").state is State.OPEN, what="open at b")
    assert b.breakers.get("w0").cooldown_s == pytest.approx(0.3)
    assert not b.breakers.get("w0").would_allow()
    # a's probe succeeds after the cooldown: closed at b as well
    await eventually(lambda: a.breakers.get("w0").would_allow(), what="a may probe")
    assert a.breakers.get("w0").allow()
    a.breakers.get("w0").record(Outcome.SUCCESS)
    assert a.breakers.get("w0").state is State.CLOSED
    await eventually(lambda: b.breakers.get("w0").state is State.CLOSED,
                     what="closed at b")
    # no echo: b applied two transitions and published none
    assert b.link.published["breaker"] == 0 and a.link.published["breaker"] == 2


async def test_open_breaker_reaches_a_hub_that_starts_during_its_cooldown(
        hubs: Factory) -> None:
    a = await hubs("a")
    for _ in range(3):
        a.breakers.get("w0").record(Outcome.FAILURE)
    await eventually(lambda: a.link.published["breaker"] == 1)
    b = await hubs("b")
    breaker = b.breakers.get("w0")
    assert breaker.state is State.OPEN and breaker.cooldown_s == pytest.approx(30.0)
    left = breaker.snapshot()["retry_in_s"]
    assert isinstance(left, float) and 0 < left <= 30.0


async def test_outage_then_resync_merges_what_each_hub_did_meanwhile(
        tmp_path: Path, hubs: Factory) -> None:
    server = RedisServer(tmp_path, port=free_port()).start()
    try:
        a = await hubs("a", url=server.url)
        b = await hubs("b", url=server.url)
        await a.agents.heartbeat(beat("before", 8100), principal())
        await eventually(lambda: b.worker("before-llamacpp-8100") is not None)
        server.kill()
        await eventually(lambda: not a.link.up and not b.link.up, what="both down")
        # both keep working on local state
        result = await a.agents.heartbeat(beat("during", 8101), principal())
        assert result.accepted == ["during-llamacpp-8101"]
        wb = b.worker("w0")
        assert wb is not None
        b.registry.set_draining(wb, True)
        for _ in range(3):
            a.breakers.get("w0").record(Outcome.FAILURE)
        assert b.worker("during-llamacpp-8101") is None
        server.start()  # empty: the restart lost everything stored
        await eventually(lambda: b.worker("during-llamacpp-8101") is not None,
                         what="worker registered during the outage reaches b")
        wa = a.worker("w0")
        assert wa is not None
        await eventually(lambda: wa.draining, what="drain made during the outage reaches a")
        await eventually(lambda: b.breakers.get("w0").state is State.OPEN,
                         what="breaker opened during the outage reaches b")
        assert b.worker("before-llamacpp-8100") is not None
        assert a.link.resyncs == 2 and b.link.resyncs == 2
        # and the store holds the union again, for a hub that starts now
        c = await hubs("c", url=server.url)
        assert c.worker("before-llamacpp-8100") is not None
        assert c.worker("during-llamacpp-8101") is not None
        wc = c.worker("w0")
        assert wc is not None and wc.draining
    finally:
        server.stop()
