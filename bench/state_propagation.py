#!/usr/bin/env python3
"""How long one hub's discovery takes to act at another hub, through a real Redis.

Two hubs' shared-state parts (registry, agent book, breakers, Redis link) run in this
process against one local redis-server, each with its own connection, as two hub
processes would. Per sample it times, from the moment hub A's state changes to the
moment hub B's has changed (a listener at B, no polling):

- ``breaker``: A's breaker opens after failures -> B's breaker for that worker is open;
- ``drain``: an operator drains a worker at A -> it is draining at B;
- ``agent``: a heartbeat accepted at A -> its worker is registered at B (B checks the
  report again, like a heartbeat, before it registers it).

It also times an outage: Redis killed, then restarted (empty), until both links are
up and B holds a worker registered at A during the outage.

``--processes N`` instead runs two real hub processes (JWT auth off, agents off)
with N config workers on one failing fault worker; each request at hub A opens one
worker's breaker (``consecutive_failures: 1``, one attempt), and a thread polling
hub B's ``/admin/workers`` notes when B shows it open. The figure is from A's
client getting its error to B's admin API showing the breaker open, so it includes
one poll (a few ms) and can be below zero (A publishes before it answers).

Usage: python -m bench.state_propagation [--samples 200] [--processes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from hub.auth.principal import Principal
from hub.config.schema import Agents, WorkerSpec
from hub.fleet.agents import AgentBook
from hub.fleet.registry import Registry, Worker
from hub.resilience.breaker import BreakerConfig, Breakers, Outcome, State
from hub.state.config import StateConfig
from hub.state.redis_link import RedisLink
from hub.state.shared import SharedState
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.redis_proc import RedisServer

BOX = Principal(sub="box", tenant="box", scopes=frozenset({"agent"}), models=None)


class Side:
    def __init__(self, url: str, hub_id: str) -> None:
        self.registry = Registry((WorkerSpec(name="w0", url="http://127.0.0.1:9"),))
        self.agents = AgentBook(self.registry, Agents(enabled=True, max_ids_per_token=100_000,
                                                      max_workers=100_000))
        self.breakers = Breakers(BreakerConfig(consecutive_failures=1, cooldown_s=60))
        link = RedisLink(url, "bench", hub_id=hub_id, backoff_s=(0.05, 0.2))
        self.shared = SharedState(StateConfig(backend="redis", namespace="bench"), link)
        self.shared.attach(self.agents, self.registry, lambda: self.breakers)

    @property
    def link(self) -> RedisLink:
        return self.shared.link

    def w0(self) -> Worker:
        w = self.registry.get("w0")
        assert w is not None
        return w


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return (f"{name:8s} n={len(ms):4d}  p50 {q[49]:6.2f} ms  p90 {q[89]:6.2f} ms  "
            f"p99 {q[98]:6.2f} ms  max {ms[-1]:6.2f} ms")


async def timed(change: Callable[[], Any], done: asyncio.Event) -> float:
    done.clear()
    t0 = time.perf_counter()
    result = change()
    if asyncio.iscoroutine(result):
        await result
    await asyncio.wait_for(done.wait(), 10)
    return time.perf_counter() - t0


async def poll(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not pred():
        if time.perf_counter() > deadline:
            raise TimeoutError("the state did not arrive")
        await asyncio.sleep(0.001)


async def run(samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        a, b = Side(server.url, "A"), Side(server.url, "B")
        await a.shared.start()
        await b.shared.start()
        done = asyncio.Event()
        try:
            # breaker: B's transition listener fires when its breaker opens
            b.breakers.listeners.append(
                lambda name, old, new: done.set() if new is State.OPEN else None)
            breaker: list[float] = []
            for _ in range(samples):
                breaker.append(await timed(
                    lambda: a.breakers.get("w0").record(Outcome.FAILURE), done))
                a.breakers.get("w0").force_close()  # not shared: reset both sides
                b.breakers.get("w0").force_close()
                await asyncio.sleep(0.002)
            print(summary("breaker", breaker))

            b.registry.on_drain.append(lambda w: done.set())
            drain: list[float] = []
            for i in range(samples):
                drain.append(await timed(
                    partial(a.registry.set_draining, a.w0(), i % 2 == 0), done))
            print(summary("drain", drain))

            b.registry.on_add.append(lambda w: done.set())
            agent: list[float] = []
            for i in range(samples):
                doc = {"agent_id": f"box{i}", "workers": [
                    {"url": f"http://127.0.0.1:{20000 + i}", "kind": "llamacpp",
                     "models": ["m"]}]}
                agent.append(await timed(partial(a.agents.heartbeat, doc, BOX), done))
            print(summary("agent", agent))

            server.kill()
            t0 = time.perf_counter()
            await poll(lambda: not a.link.up and not b.link.up)
            noticed = time.perf_counter() - t0
            await a.agents.heartbeat({"agent_id": "late", "workers": [
                {"url": "http://127.0.0.1:29999", "kind": "llamacpp", "models": ["m"]}]}, BOX)
            resyncs = a.link.resyncs, b.link.resyncs
            server.start()
            t1 = time.perf_counter()
            await poll(lambda: a.link.resyncs > resyncs[0] and b.link.resyncs > resyncs[1])
            resynced = time.perf_counter() - t1
            await poll(lambda: b.registry.get("late-llamacpp-29999") is not None)
            print(f"outage: both hubs marked Redis down {noticed * 1000:.0f} ms after the "
                  f"kill; after the restart (redis-server answering), both had resynced "
                  f"after {resynced * 1000:.0f} ms (reconnect backoff 50-200 ms), and B "
                  f"held the worker registered at A during the outage after "
                  f"{(time.perf_counter() - t1) * 1000:.0f} ms")
        finally:
            await a.shared.stop()
            await b.shared.stop()
            server.stop()


def admin_workers(hub: HubProcess) -> dict[str, Any]:
    return {w["name"]: w for w in hub.get_json("/admin/workers")["workers"]}


def post(hub: HubProcess, model: str) -> int:
    req = urllib.request.Request(f"{hub.url}/v1/chat/completions", data=json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def processes(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = RedisServer(work).start()
        fault = FaultWorker(work, "fm", "error500").start()
        config = {
            "state": {"backend": "redis"}, "health": {"interval_s": 1, "timeout_s": 1},
            "routing": {"max_attempts": 1},
            "resilience": {"breaker": {"consecutive_failures": 1, "cooldown_s": 600,
                                       "max_cooldown_s": 600}},
            "workers": [{"name": f"w{i}", "url": fault.url} for i in range(n)]}
        env = {"SPOKEHUB_REDIS_URL": server.url}
        a = HubProcess(config, work, env).start()
        b = HubProcess(config, work, env).start()
        seen_b: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                now = time.perf_counter()
                for name, w in admin_workers(b).items():
                    if w["breaker"]["state"] == "open" and name not in seen_b:
                        seen_b[name] = now
        try:
            poll_sync(lambda: all(w["healthy"] for w in admin_workers(a).values())
                      and all(w["healthy"] for w in admin_workers(b).values()))
            watcher = threading.Thread(target=watch)
            watcher.start()
            answered: dict[str, float] = {}
            for _ in range(n):
                before = {k for k, w in admin_workers(a).items()
                          if w["breaker"]["state"] == "open"}
                post(a, "fm")
                done = time.perf_counter()
                opened = {k for k, w in admin_workers(a).items()
                          if w["breaker"]["state"] == "open"} - before
                for name in opened:
                    answered[name] = done
                time.sleep(0.05)
            poll_sync(lambda: set(answered) <= set(seen_b))
            stop.set()
            watcher.join()
            delays = [seen_b[k] - answered[k] for k in answered]
            print(summary("process", delays))
        finally:
            stop.set()
            a.stop()
            b.stop()
            fault.stop()
            server.stop()


def poll_sync(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("not ready")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--processes", type=int, default=0,
                    help="time breaker propagation between two hub processes instead")
    args = ap.parse_args()
    logging.getLogger("spokehub").setLevel(logging.CRITICAL)  # the figures only
    if args.processes:
        processes(args.processes)
    else:
        asyncio.run(run(args.samples))


if __name__ == "__main__":
    main()
