"""The prober's scheduling: bounded concurrency, agent workers capped apart, config first."""

from __future__ import annotations

import asyncio

import pytest

from hub.config.schema import Health
from hub.config.workers import WorkerSpec
from hub.fleet import prober as prober_mod
from hub.fleet.prober import MAX_AGENT_PROBES, MAX_PROBES, Prober
from hub.fleet.registry import Registry
from hub.probing import ProbeResult
from hub.upstream import Pool


class Gate:
    """Counts probes in progress; each waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.full = asyncio.Event()
        self.running: dict[str, int] = {"config": 0, "agent": 0}
        self.peak: dict[str, int] = {"config": 0, "agent": 0, "all": 0}
        self.order: list[str] = []

    async def probe(self, pool: Pool, kind: str, url: str, headers: dict[str, str],
                    timeout_s: float) -> ProbeResult:
        group = "agent" if "agent" in url else "config"
        self.order.append(group)
        self.running[group] += 1
        self.peak[group] = max(self.peak[group], self.running[group])
        self.peak["all"] = max(self.peak["all"], sum(self.running.values()))
        if sum(self.running.values()) >= MAX_PROBES:
            self.full.set()
        await self.open.wait()
        self.running[group] -= 1
        return ProbeResult(healthy=True, detail="ok", models=frozenset({"m"}))


async def test_probes_are_bounded_and_config_workers_go_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    for i in range(20):
        registry.add(WorkerSpec(name=f"a{i}", url=f"http://127.0.0.1:{20000 + i}/agent"))
        registry.get(f"a{i}").source = "agent:box"  # type: ignore[union-attr]
    for i in range(5):
        registry.add(WorkerSpec(name=f"c{i}", url=f"http://127.0.0.1:{30000 + i}"))
    gate = Gate()
    monkeypatch.setattr(prober_mod, "probe", gate.probe)
    prober = Prober(registry, Pool(), Health)
    task = asyncio.create_task(prober.probe_all())
    await asyncio.wait_for(gate.full.wait(), 60)
    for _ in range(10):  # nothing else gets in while the gate is shut
        await asyncio.sleep(0)
    assert sum(gate.running.values()) == MAX_PROBES
    gate.open.set()
    await asyncio.wait_for(task, 60)
    assert gate.peak["all"] == MAX_PROBES
    assert gate.peak["agent"] <= MAX_AGENT_PROBES
    assert gate.order[:5] == ["config"] * 5
    assert all(w.healthy for w in registry)
