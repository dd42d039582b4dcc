"""AgentBook against a real registry: names, ownership, caps, models, expiry, state file.

Every address here is loopback or private and nothing is ever connected to: host
names go through a fake resolver.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hub.auth.principal import Principal
from hub.config.schema import Agents, WorkerSpec
from hub.errors import BadRequest, Forbidden, HubError
from hub.fleet.agent_policy import (
    Resolver,
    TooManyAgentIds,
    TooManyAgentWorkers,
    WorkerRefused,
    parse_networks,
)
from hub.fleet.agents import AgentBook
from hub.fleet.registry import ProbeResult, Registry, Worker


def principal(sub: str = "box-token", models: list[str] | None = None) -> Principal:
    return Principal(sub=sub, tenant=sub, scopes=frozenset({"agent"}),
                     models=None if models is None else frozenset(models))


def beat(agent_id: str, *workers: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "host": {"hostname": agent_id}, "workers": list(workers)}


def worker(port: int = 8080, models: tuple[str, ...] = ("m1",), **extra: Any) -> dict[str, Any]:
    return {"url": f"http://127.0.0.1:{port}", "kind": "llamacpp", "models": list(models),
            **extra}


def get(registry: Registry, name: str) -> Worker:
    w = registry.get(name)
    assert w is not None, name
    return w


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(settings: Agents | None = None, config: tuple[WorkerSpec, ...] = (),
         aliases: dict[str, str] | None = None,
         hosts: dict[str, list[str]] | None = None) -> tuple[AgentBook, Registry, Clock]:
    async def lookup(host: str) -> list[tuple[Any, ...]]:
        if hosts is None or host not in hosts:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in hosts[host]]

    registry = Registry(config)
    clock = Clock()
    agents = AgentBook(registry, settings or Agents(enabled=True), clock, aliases=aliases,
                       resolver=Resolver(lookup=lookup))
    return agents, registry, clock


async def test_the_hub_names_agent_workers() -> None:
    agents, registry, _ = book(config=(WorkerSpec(name="static1", url="http://127.0.0.1:9"),))
    result = await agents.heartbeat(beat("box1", worker(8080, name="static1"),
                                         worker(11434, kind="ollama", name="anything")),
                                    principal())
    assert result.accepted == ["box1-llamacpp-8080", "box1-ollama-11434"]
    assert result.rejected == []
    assert get(registry, "static1").source == "config"
    assert get(registry, "static1").url == "http://127.0.0.1:9"
    assert agents.records["box1"].labels == {"box1-llamacpp-8080": "static1",
                                             "box1-ollama-11434": "anything"}
    # the same kind and port twice in one heartbeat is one worker
    result = await agents.heartbeat(beat("box1", worker(8080), worker(8080)), principal())
    assert result.accepted == ["box1-llamacpp-8080"]
    assert "same kind and port" in result.rejected[0]["reason"]


async def test_a_config_worker_with_the_hub_made_name_wins() -> None:
    agents, registry, _ = book(config=(WorkerSpec(name="box1-llamacpp-8080",
                                                  url="http://127.0.0.1:9"),))
    result = await agents.heartbeat(beat("box1", worker(8080)), principal())
    assert result.accepted == [] and "hub config" in result.rejected[0]["reason"]
    assert get(registry, "box1-llamacpp-8080").url == "http://127.0.0.1:9"


async def test_agent_ids_belong_to_their_token_and_are_capped() -> None:
    agents, registry, clock = book(Agents(enabled=True, max_ids_per_token=2,
                                          remove_after_s=60))
    await agents.heartbeat(beat("a1", worker()), principal("t1"))
    await agents.heartbeat(beat("a2"), principal("t1"))
    with pytest.raises(TooManyAgentIds) as err:
        await agents.heartbeat(beat("a3", worker()), principal("t1"))
    assert err.value.status == 403 and "agents.max_ids_per_token: 2" in err.value.message
    assert "a3" not in agents.records and registry.get("a3-llamacpp-8080") is None
    # another token: its own budget, and no access to t1's ids while they have workers
    await agents.heartbeat(beat("b1", worker()), principal("t2"))
    with pytest.raises(Forbidden):
        await agents.heartbeat(beat("a1", worker()), principal("t2"))
    with pytest.raises(Forbidden):
        agents.deregister("a1", "t2")
    # an id is freed by deregistering it ...
    assert agents.deregister("a1", "t1") == ["a1-llamacpp-8080"]
    await agents.heartbeat(beat("a3"), principal("t1"))
    # ... or when it has no workers and stays silent past remove_after_s
    clock.now += 31
    await agents.heartbeat(beat("b1", worker()), principal("t2"))
    clock.now += 31
    agents.expire()
    assert set(agents.records) == {"b1"}  # b1 still has its worker
    await agents.heartbeat(beat("a4"), principal("t1"))
    await agents.heartbeat(beat("a5"), principal("t1"))


async def test_agent_workers_are_capped_in_total() -> None:
    agents, registry, _ = book(Agents(enabled=True, max_workers=2))
    assert (await agents.heartbeat(beat("a", worker(1), worker(2)), principal("t1"))).accepted \
        == ["a-llamacpp-1", "a-llamacpp-2"]
    with pytest.raises(TooManyAgentWorkers) as err:
        await agents.heartbeat(beat("b", worker(1)), principal("t2"))
    assert err.value.status == 429 and "agents.max_workers: 2" in err.value.message
    assert "Retry-After" in err.value.headers
    # a full hub still refreshes the workers it has; a new one is rejected by name
    result = await agents.heartbeat(beat("a", worker(1), worker(2), worker(3)), principal("t1"))
    assert result.accepted == ["a-llamacpp-1", "a-llamacpp-2"]
    assert result.rejected[0]["name"] == "a-llamacpp-3"
    assert "agents.max_workers" in result.rejected[0]["reason"]
    assert len(registry) == 2


async def test_models_are_limited_by_the_token_and_pinned() -> None:
    agents, registry, _ = book()
    result = await agents.heartbeat(
        beat("box", worker(models=("mine", "victim"), loaded_models=["victim", "mine"])),
        principal(models=["mine"]))
    assert result.accepted == ["box-llamacpp-8080"]
    assert "victim" in result.warnings[0]["reason"]
    w = registry.get("box-llamacpp-8080")
    assert w is not None and w.models == {"mine"} and w.loaded_models == {"mine"}
    # the worker itself claiming more in a probe does not widen it
    registry.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"mine", "victim"})))
    assert w.models == {"mine"} and registry.candidates("victim") == []
    # nothing left that it may serve: the worker is refused (and removed)
    result = await agents.heartbeat(beat("box", worker(models=("victim",))),
                                    principal(models=["mine"]))
    assert result.accepted == [] and "models claim" in result.rejected[0]["reason"]
    assert registry.get("box-llamacpp-8080") is None
    # a worker that reports no models is not registered either
    result = await agents.heartbeat(beat("box", worker(models=())), principal())
    assert "reports none" in result.rejected[0]["reason"]


async def test_aliases_never_point_at_agent_models_unless_allowed() -> None:
    aliases = {"friendly": "target-m"}
    agents, registry, _ = book(aliases=aliases)
    result = await agents.heartbeat(beat("box", worker(models=("target-m", "friendly", "own"))),
                                    principal())
    assert get(registry, "box-llamacpp-8080").models == {"own"}
    assert "alias" in result.warnings[0]["reason"]
    agents.settings = Agents(enabled=True, alias_targets=True)
    await agents.heartbeat(beat("box", worker(models=("target-m", "own"))), principal())
    assert get(registry, "box-llamacpp-8080").models == {"target-m", "own"}


async def test_networks_checked_for_literals_and_resolved_names() -> None:
    only = parse_networks(["127.0.0.2/32", "10.9.0.0/16"], "x")
    agents, registry, _ = book(replace(Agents(enabled=True), allowed_networks=only),
                               hosts={"box.internal": ["10.9.0.5"],
                                      "sneaky.internal": ["10.9.0.5", "127.0.0.1"]})
    with pytest.raises(WorkerRefused) as err:
        await agents.heartbeat(beat("box", worker(9)), principal())
    assert "http://127.0.0.1:9" in err.value.message and "127.0.0.2/32" in err.value.message
    assert len(registry) == 0 and "box" not in agents.records
    ok = {"url": "http://box.internal:8080", "models": ["m"]}
    result = await agents.heartbeat(beat("box", ok), principal())
    assert result.accepted == ["box-llamacpp-8080"]
    with pytest.raises(WorkerRefused, match=r"127\.0\.0\.1"):
        await agents.heartbeat(beat("box", {**ok, "url": "http://sneaky.internal:8080"}),
                               principal())
    # a name that does not resolve rejects only its worker
    result = await agents.heartbeat(beat("box", ok, {**ok, "url": "http://gone.internal:1"}),
                                    principal())
    assert result.accepted == ["box-llamacpp-8080"]
    assert "cannot resolve" in result.rejected[0]["reason"]


async def test_credentials_in_a_url_refuse_the_heartbeat(
        caplog: pytest.LogCaptureFixture) -> None:
    agents, registry, _ = book()
    for _ in range(3):
        with pytest.raises(WorkerRefused) as err:
            await agents.heartbeat(beat("box", {"url": "http://u:hunter2@127.0.0.1:8080",
                                                "models": ["m"]}), principal())
    assert "credentials" in err.value.message and "hunter2" not in err.value.message
    assert len(registry) == 0
    # logged once, not on every heartbeat, and without the password
    refused = [r.getMessage() for r in caplog.records if "refused a heartbeat" in r.getMessage()]
    assert len(refused) == 1 and "box" in refused[0] and "hunter2" not in refused[0]


async def test_bad_numbers_reject_the_worker() -> None:
    agents, registry, _ = book()
    result = await agents.heartbeat(beat("box", worker(1, vram_free_mb=1e18),
                                         worker(2, slots_total=-1),
                                         worker(3, slots_total=4, slots_busy=1,
                                                vram_free_mb=8192)), principal())
    assert result.accepted == ["box-llamacpp-3"]
    reasons = {r["name"]: r["reason"] for r in result.rejected}
    assert "vram_free_mb" in reasons["box-llamacpp-1"]
    assert "slots_total" in reasons["box-llamacpp-2"]
    w = get(registry, "box-llamacpp-3")
    assert (w.slots_total, w.slots_busy, w.vram_free_mb) == (4, 1, 8192)
    # a heartbeat without slots keeps what the prober saw
    registry.apply_probe(w, ProbeResult(healthy=True, slots_total=6, slots_busy=2))
    await agents.heartbeat(beat("box", worker(3)), principal())
    assert (w.slots_total, w.slots_busy, w.vram_free_mb) == (6, 2, None)


async def test_malformed_heartbeats() -> None:
    agents, _, _ = book()
    bad: Any
    for bad in ([], {"agent_id": ""}, {"agent_id": "x", "workers": "no"},
                {"agent_id": "x" * 100}, {"agent_id": "x", "workers": [{}] * 65}):
        with pytest.raises(BadRequest):
            await agents.heartbeat(bad, principal())
    result = await agents.heartbeat(beat("x", "nope", {"url": "ftp://x"}, {"url": 5}),
                                    principal())
    assert len(result.rejected) == 3 and result.accepted == []


async def test_state_file_round_trip_rechecks_entries(tmp_path: Path) -> None:
    state = tmp_path / "agents.json"
    settings = Agents(enabled=True, ttl_s=30, state_file=str(state))
    agents, _, _ = book(settings)
    await agents.heartbeat(beat("box9", worker(8080, models=("m1",))), principal("t9"))
    doc = json.loads(state.read_text())
    assert doc["workers"][0]["name"] == "box9-llamacpp-8080"
    assert doc["workers"][0]["owner"] == "t9" and doc["workers"][0]["models"] == ["m1"]
    # entries a hand-edited or older file may hold are checked again
    doc["workers"] += [
        {**doc["workers"][0], "name": "squat", "source": "agent:evil", "url":
         "http://127.0.0.1:9"},
        {**doc["workers"][0], "source": "agent:meta", "url": "http://169.254.169.254"},
        {**doc["workers"][0], "source": "agent:cred", "url": "http://a:b@127.0.0.1:7"},
    ]
    state.write_text(json.dumps(doc))
    again, registry, _ = book(settings)
    assert again.load() == 2
    assert sorted(w.name for w in registry) == ["box9-llamacpp-8080", "evil-llamacpp-9"]
    assert get(registry, "box9-llamacpp-8080").models == {"m1"}
    assert again.records["box9"].owner == "t9" and not again.records["box9"].heard
    with pytest.raises(Forbidden):
        await again.heartbeat(beat("box9", worker()), principal("other"))


async def test_errors_are_hub_errors() -> None:
    for cls in (TooManyAgentIds, TooManyAgentWorkers, WorkerRefused):
        assert issubclass(cls, HubError)


async def test_a_reload_removes_what_agents_may_no_longer_register() -> None:
    agents, registry, _ = book(hosts={"box.internal": ["10.9.0.5"]})
    await agents.heartbeat(beat("a", worker(1, models=("m1", "m2"))), principal("t1"))
    await agents.heartbeat(beat("b", {"url": "http://box.internal:2", "models": ["m1"]}),
                           principal("t2"))
    await agents.heartbeat(beat("c", {"url": "http://127.0.0.2:3", "models": ["m2"]}),
                           principal("t3"))
    only = parse_networks(["127.0.0.2/32", "10.9.0.0/16"], "x")
    removed = agents.reconfigure(replace(Agents(enabled=True), allowed_networks=only),
                                 {"alias": "m1"})
    # a-llamacpp-1 is at 127.0.0.1, now outside; b's host name is checked at its next
    # heartbeat; b lost its only model to the alias; c keeps m2.
    assert sorted(removed) == ["a-llamacpp-1", "b-llamacpp-2"]
    assert get(registry, "c-llamacpp-3").models == {"m2"}
    agents.reconfigure(Agents(enabled=True), {"alias": "m2"})
    assert registry.get("c-llamacpp-3") is None


async def test_shared_reports_follow_the_same_ttl_and_never_go_back_in_time() -> None:
    """Another hub's report of a heartbeat: applied with its own last-seen time, so
    TTL and removal run as if the heartbeat had come here; older news is ignored."""
    settings = Agents(enabled=True, ttl_s=15, remove_after_s=600)
    a, _, clock_a = book(settings)
    b, registry_b, clock_b = book(settings)
    reports: list[dict[str, Any]] = []
    a.on_report.append(reports.append)
    await a.heartbeat(beat("box1", worker(8080)), principal())
    assert len(reports) == 1 and reports[0]["owner"] == "box-token"
    clock_b.now = clock_a.now + 20  # b hears of it late: the agent is already past its TTL
    assert await b.apply_shared(reports[0])
    w = get(registry_b, "box1-llamacpp-8080")
    assert w.source == "agent:box1" and w.agent_stale and w.last_seen == clock_a.now
    assert not await b.apply_shared(reports[0])  # the same news again: nothing to do
    clock_a.now += 30
    await a.heartbeat(beat("box1", worker(8080), worker(8081)), principal())
    assert await b.apply_shared(reports[1])
    assert not get(registry_b, "box1-llamacpp-8080").agent_stale
    assert get(registry_b, "box1-llamacpp-8081").source == "agent:box1"
    assert not await b.apply_shared(reports[0])  # older than what b has
    assert registry_b.get("box1-llamacpp-8081") is not None
    # too old to matter at all
    clock_b.now += 700
    late = {**reports[1], "agent_id": "box2"}
    assert not await b.apply_shared(late)
    assert registry_b.get("box2-llamacpp-8080") is None
    # malformed reports are refused, not crashes
    bad: object
    for bad in (None, [], {**reports[1], "last_seen": float("nan")},
                {**reports[1], "token_models": "m1"}, {**reports[1], "workers": {}}):
        assert not await b.apply_shared(bad)


async def test_while_the_shared_store_is_down_workers_heard_elsewhere_stay(
        tmp_path: Path) -> None:
    """Their heartbeats go to another hub and cannot reach this one during a Redis
    outage: keep serving them from the last snapshot (probes still guard them), also
    across a restart from the state file; this hub's own agents expire as usual."""
    settings = Agents(enabled=True, ttl_s=15, remove_after_s=600,
                      state_file=str(tmp_path / "agents.json"))
    a, _, clock_a = book(settings)
    b, registry_b, clock_b = book(settings)
    reports: list[dict[str, Any]] = []
    a.on_report.append(reports.append)
    await a.heartbeat(beat("far", worker(8080)), principal())
    clock_b.now = clock_a.now
    assert await b.apply_shared(reports[0])
    await b.heartbeat(beat("near", worker(8081)), principal())
    down = True
    b.hold_shared = lambda: down
    clock_b.now += 60
    b.expire()
    assert not get(registry_b, "far-llamacpp-8080").agent_stale
    assert get(registry_b, "near-llamacpp-8081").agent_stale
    # a restart during the outage: restored from the file, still served
    b.save()
    c, registry_c, clock_c = book(settings)
    c.hold_shared = lambda: down
    clock_c.now = clock_b.now
    assert c.load() == 2
    assert not get(registry_c, "far-llamacpp-8080").agent_stale
    assert get(registry_c, "near-llamacpp-8081").agent_stale
    # Redis is back: the usual rules (a fresher report would have come with the resync)
    down = False
    b.expire()
    c.expire()
    assert get(registry_b, "far-llamacpp-8080").agent_stale
    assert get(registry_c, "far-llamacpp-8080").agent_stale
