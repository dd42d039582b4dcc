"""Several hub processes as one hub: shared state in one real redis-server.

Every hub here is a real process with JWT auth on and ``state.backend: redis``
(the URL in SPOKEHUB_REDIS_URL); workers are a real llama-server and fault workers.
What one hub learns (an agent's heartbeat, a drain, a failing worker) the others act
on; Redis going away under load costs no request, and its return resyncs the hubs.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.redis_proc import RedisServer

ENV = "SPOKEHUB_SEVERAL_SECRET"
AUTH = {"enabled": True, "keys": [{"kid": "fleet", "alg": "HS256", "secret_env": ENV}]}


@dataclass
class Reply:
    status: int
    doc: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fleet:
    """Hubs sharing one Redis namespace and one signing key."""

    workdir: Path
    redis: RedisServer
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    namespace: str = field(default_factory=lambda: f"t{secrets.token_hex(4)}")
    hubs: list[HubProcess] = field(default_factory=list)

    def hub(self, **config: Any) -> HubProcess:
        base: dict[str, Any] = {
            "auth": AUTH, "state": {"backend": "redis", "namespace": self.namespace},
            "health": {"interval_s": 0.5, "timeout_s": 1}, "agents": {"ttl_s": 120},
            "workers": []}
        env = {ENV: self.secret, "SPOKEHUB_REDIS_URL": self.redis.url}
        hub = HubProcess({**base, **config}, self.workdir, env)
        self.hubs.append(hub)
        return hub.start()

    def token(self, scope: str, tenant: str = "ops", models: list[str] | None = None) -> str:
        return issue_token(parse_auth(AUTH, "auth"), tenant=tenant, scopes=[scope],
                           ttl_s=3600, models=models, environ={ENV: self.secret})

    def call(self, hub: HubProcess, method: str, path: str, doc: Any = None, *,
             scope: str = "admin", token: str | None = None) -> Reply:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(f"{hub.url}{path}", data=data, method=method, headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or self.token(scope)}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
                return Reply(resp.status, json.loads(body) if body.startswith(b"{") else body,
                             {k.lower(): v for k, v in resp.headers.items()})
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, json.loads(exc.read() or b"{}"),
                         {k.lower(): v for k, v in exc.headers.items()})

    def workers(self, hub: HubProcess) -> dict[str, dict[str, Any]]:
        reply = self.call(hub, "GET", "/admin/workers")
        assert reply.status == 200, reply.doc
        return {w["name"]: w for w in reply.doc["workers"]}

    def chat(self, hub: HubProcess, model: str) -> Reply:
        return self.call(hub, "POST", "/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2}, scope="infer")

    def metric(self, hub: HubProcess, name: str) -> float | None:
        reply = self.call(hub, "GET", "/metrics")
        text = reply.doc.decode() if isinstance(reply.doc, bytes) else str(reply.doc)
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def beat(self, hub: HubProcess, agent_id: str, token: str, *workers: dict[str, Any]) -> Reply:
        return self.call(hub, "POST", "/v1/agents/heartbeat",
                         {"agent_id": agent_id, "interval_s": 5,
                          "host": {"hostname": agent_id}, "workers": list(workers)},
                         token=token)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    redis = RedisServer(tmp_path).start()
    f = Fleet(tmp_path, redis)
    yield f
    for hub in f.hubs:
        hub.stop()
    redis.stop()


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def all_healthy(fleet: Fleet, hub: HubProcess) -> bool:
    return all(w["healthy"] for w in fleet.workers(hub).values())


def backend_up_is(fleet: Fleet, hub: HubProcess, value: float) -> bool:
    return fleet.metric(hub, "spokehub_state_backend_up") == value


def entry(url: str, models: list[str]) -> dict[str, Any]:
    return {"name": "gpu0", "url": url, "kind": "llamacpp", "models": models}


def test_worker_registered_through_hub_a_is_routed_by_hub_b(
        fleet: Fleet, make_llama: Callable[..., LlamaWorker]) -> None:
    llama = make_llama("boxmodel", seed=0)
    a, b = fleet.hub(), fleet.hub()
    agent = fleet.token("agent", tenant="box1", models=["boxmodel"])
    reply = fleet.beat(a, "box1", agent, entry(llama.url, ["boxmodel"]))
    name = f"box1-llamacpp-{llama.port}"
    assert reply.status == 200 and reply.doc["accepted"] == [name], reply.doc
    wait_for(lambda: fleet.workers(b).get(name, {}).get("healthy") is True,
             "hub b registers and probes the worker")
    assert fleet.workers(b)[name]["source"] == "agent:box1"
    reply = fleet.chat(b, "boxmodel")
    assert reply.status == 200, reply.doc
    assert reply.headers["x-spokehub-worker"] == name
    agents = fleet.call(b, "GET", "/admin/agents").doc["agents"]
    assert [(x["agent_id"], x["workers"]) for x in agents] == [("box1", [name])]
    # the owner rule holds at every hub: another agent token cannot take box1 at b
    other = fleet.token("agent", tenant="box2", models=["boxmodel"])
    assert fleet.beat(b, "box1", other, entry(llama.url, ["boxmodel"])).status == 403
    # deregistered at b: gone at a
    reply = fleet.call(b, "DELETE", "/v1/agents/box1", token=agent)
    assert reply.status == 200 and reply.doc["removed"] == [name]
    wait_for(lambda: name not in fleet.workers(a), "deregistration reaches hub a")


def test_drain_and_breaker_at_hub_a_stop_hub_b_traffic(
        fleet: Fleet, make_fault: Callable[..., FaultWorker]) -> None:
    f0, f1 = make_fault("fm"), make_fault("fm")
    config = {"workers": [{"name": "w0", "url": f0.url}, {"name": "w1", "url": f1.url}],
              "resilience": {"breaker": {"consecutive_failures": 2, "cooldown_s": 120,
                                         "max_cooldown_s": 240}}}
    a, b = fleet.hub(**config), fleet.hub(**config)
    for hub in (a, b):
        wait_for(partial(all_healthy, fleet, hub), "workers up")

    # drain at a: b sends w0 nothing
    assert fleet.call(a, "POST", "/admin/workers/w0/drain").status == 200
    wait_for(lambda: fleet.workers(b)["w0"]["draining"], "drain reaches hub b")
    before = f0.stats()["requests"]
    for _ in range(10):
        reply = fleet.chat(b, "fm")
        assert reply.status == 200 and reply.headers["x-spokehub-worker"] == "w1"
    assert f0.stats()["requests"] == before
    # undrain at b: back at a too
    assert fleet.call(b, "POST", "/admin/workers/w0/undrain").status == 200
    wait_for(lambda: not fleet.workers(a)["w0"]["draining"], "undrain reaches hub a")

    # w0 fails; a finds out (its breaker opens); b stops sending to w0
    f0.control(mode="error500")
    for _ in range(200):
        assert fleet.chat(a, "fm").status == 200  # failover to w1
        if fleet.workers(a)["w0"]["breaker"]["state"] == "open":
            break
    assert fleet.workers(a)["w0"]["breaker"]["state"] == "open"
    wait_for(lambda: fleet.workers(b)["w0"]["breaker"]["state"] == "open",
             "breaker open at hub b")
    assert fleet.workers(b)["w0"]["breaker"]["cooldown_s"] == 120
    before = f0.stats()["requests"]
    for _ in range(20):
        reply = fleet.chat(b, "fm")
        assert reply.status == 200 and reply.headers["x-spokehub-worker"] == "w1"
    assert f0.stats()["requests"] == before  # not even one request: b never tried w0
    # no echo: b applied a's opening and published nothing of its own about it
    assert fleet.metric(b, 'spokehub_state_messages_published_total{channel="breaker"}') \
        is None
    assert fleet.metric(a, 'spokehub_state_messages_published_total{channel="breaker"}') \
        == 1.0


class Load:
    """Bounded load from a thread pool against several hubs until stopped."""

    def __init__(self, fleet: Fleet, hubs: list[HubProcess], model: str,
                 lanes: int = 4) -> None:
        self.fleet, self.hubs, self.model = fleet, hubs, model
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(lanes)
        self._futures = [self._pool.submit(self._lane, i) for i in range(lanes)]

    def _lane(self, i: int) -> None:
        n = i
        while not self.stop.is_set():
            hub = self.hubs[n % len(self.hubs)]
            n += 1
            try:
                reply = self.fleet.chat(hub, self.model)
                failed = None if reply.status == 200 else f"{reply.status} {reply.doc}"
            except OSError as exc:
                failed = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if failed is None:
                    self.ok += 1
                else:
                    self.failures.append(failed)

    def finish(self) -> None:
        self.stop.set()
        for f in self._futures:
            f.result()
        self._pool.shutdown()


def test_redis_killed_under_load_then_restarted(
        fleet: Fleet, make_fault: Callable[..., FaultWorker]) -> None:
    f0, f1, f2 = make_fault("fm"), make_fault("fm"), make_fault("fm")
    config = {"workers": [{"name": "w0", "url": f0.url}, {"name": "w1", "url": f1.url}]}
    a, b = fleet.hub(**config), fleet.hub(**config)
    for hub in (a, b):
        wait_for(partial(all_healthy, fleet, hub), "workers up")
        assert fleet.metric(hub, "spokehub_state_backend_up") == 1.0
    agent = fleet.token("agent", tenant="box", models=["fm"])
    load = Load(fleet, [a, b], "fm")
    try:
        wait_for(lambda: load.ok >= 20, "load running")
        fleet.redis.kill()
        for hub in (a, b):
            wait_for(partial(backend_up_is, fleet, hub, 0.0), "outage seen")
        # while Redis is down: an agent registers at a, an operator drains w1 at b
        reply = fleet.beat(a, "late", agent, entry(f2.url, ["fm"]))
        assert reply.status == 200 and reply.doc["accepted"] == [f"late-llamacpp-{f2.port}"]
        assert fleet.call(b, "POST", "/admin/workers/w1/drain").status == 200
        served = load.ok
        wait_for(lambda: load.ok >= served + 100, "serving during the outage")
        assert f"late-llamacpp-{f2.port}" not in fleet.workers(b)
        fleet.redis.start()  # empty: a restart loses everything stored
        for hub in (a, b):
            wait_for(partial(backend_up_is, fleet, hub, 1.0), "back up")
        wait_for(lambda: f"late-llamacpp-{f2.port}" in fleet.workers(b),
                 "worker registered during the outage reaches hub b")
        wait_for(lambda: fleet.workers(a)["w1"]["draining"],
                 "drain made during the outage reaches hub a")
        served = load.ok
        wait_for(lambda: load.ok >= served + 20, "serving after the resync")
    finally:
        load.finish()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 140
    for hub in (a, b):
        text = fleet.call(hub, "GET", "/metrics").doc.decode()
        dropped = re.findall(r"^spokehub_state_messages_dropped_total\{(.*)\} (\S+)$", text,
                             re.M)
        print(f"hub {hub.port}: {load.ok} requests served, 0 failed; messages not sent "
              f"while Redis was down (resynced instead): {dropped or 'none'}")
        log = hub.proc.log()
        assert log.count("Redis is unreachable") == 1, "logged once per outage"
        assert log.count("Redis is back") == 1
        assert fleet.metric(hub, "spokehub_state_resyncs_total") == 2.0
        assert fleet.metric(hub, "spokehub_state_outages_total") == 1.0


def test_hub_started_while_redis_is_down_serves_its_persisted_agent_workers(
        fleet: Fleet, make_fault: Callable[..., FaultWorker], tmp_path: Path) -> None:
    f0 = make_fault("fm")
    a = fleet.hub()
    # A short TTL: the agent reports to hub a only, so while Redis is down hub c hears
    # nothing of it and must serve from its last snapshot rather than expire it.
    c_config = {"agents": {"ttl_s": 1, "state_file": str(tmp_path / "c-agents.json")}}
    c = fleet.hub(**c_config)
    agent = fleet.token("agent", tenant="box", models=["fm"])
    name = f"box-llamacpp-{f0.port}"
    assert fleet.beat(a, "box", agent, entry(f0.url, ["fm"])).doc["accepted"] == [name]
    wait_for(lambda: name in fleet.workers(c), "hub c learns the worker from hub a")
    assert c.stop() == 0
    fleet.redis.kill()
    c2 = fleet.hub(**c_config)  # Redis is down: it starts from its state file
    assert fleet.metric(c2, "spokehub_state_backend_up") == 0.0
    wait_for(lambda: fleet.workers(c2).get(name, {}).get("healthy") is True,
             "restored worker probed healthy")
    time.sleep(1.5)  # past its TTL: still served while Redis is down
    assert fleet.workers(c2)[name]["agent_stale"] is False
    reply = fleet.chat(c2, "fm")
    assert reply.status == 200 and reply.headers["x-spokehub-worker"] == name
    fleet.redis.start()
    wait_for(lambda: fleet.metric(c2, "spokehub_state_backend_up") == 1.0, "c joins")
    # and it takes part again: a drain at a reaches it, and a heartbeat at a refreshes it
    assert fleet.call(a, "POST", f"/admin/workers/{name}/drain").status == 200
    wait_for(lambda: fleet.workers(c2)[name]["draining"], "drain reaches the late hub")
    assert fleet.beat(a, "box", agent, entry(f0.url, ["fm"])).status == 200
    wait_for(lambda: [x["agent_id"] for x in fleet.call(c2, "GET", "/admin/agents").doc[
        "agents"]] == ["box"], "the agent's next report reaches the late hub")
