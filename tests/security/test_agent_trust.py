"""The agent trust boundary over HTTP: what a stolen agent token can and cannot do.

Every hub here is a real process with JWT auth on; agent tokens are minted with
``hub.auth.issue`` from the hub's own auth config. Workers are fault workers on
127.0.0.1 and every advertised URL is loopback: refusals of link-local and cloud
metadata addresses are unit tests of the validator (tests/fleet/test_agent_policy.py),
so that no test makes the hub send anything beyond this machine.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.security.support import Reply, hmac_secret, request, wait_until
from tests.support.hubproc import FaultWorker, HubProcess

ENV = "SPOKEHUB_AGENT_TRUST_SECRET"
AUTH = {"enabled": True, "keys": [{"kid": "trust", "alg": "HS256", "secret_env": ENV}]}


@dataclass
class SecureHub:
    hub: HubProcess
    secret: str

    @property
    def port(self) -> int:
        return self.hub.port

    def token(self, scope: str, tenant: str = "box", models: list[str] | None = None) -> str:
        return issue_token(parse_auth(AUTH, "auth"), tenant=tenant, scopes=[scope],
                           ttl_s=3600, models=models, environ={ENV: self.secret})

    def workers(self) -> dict[str, dict[str, Any]]:
        reply = request(self.port, "GET", "/admin/workers", token=self.token("admin", "ops"))
        assert reply.status == 200, reply.body
        return {w["name"]: w for w in reply.json()["workers"]}

    def beat(self, token: str, agent_id: str, *workers: dict[str, Any]) -> Reply:
        return request(self.port, "POST", "/v1/agents/heartbeat",
                       {"agent_id": agent_id, "workers": list(workers)}, token=token)

    def chat(self, model: str) -> Reply:
        return request(self.port, "POST", "/v1/chat/completions",
                       {"model": model, "messages": [{"role": "user", "content": "hi"}]},
                       token=self.token("infer", "client"))


@pytest.fixture
def make_secure(tmp_path: Path) -> Iterator[Callable[..., SecureHub]]:
    started: list[HubProcess] = []

    def make(**config: Any) -> SecureHub:
        secret = hmac_secret()
        base: dict[str, Any] = {"auth": AUTH, "health": {"interval_s": 0.3, "timeout_s": 1},
                                "workers": []}
        hub = HubProcess({**base, **config}, tmp_path, {ENV: secret})
        started.append(hub)
        hub.start()
        return SecureHub(hub, secret)

    yield make
    for hub in started:
        hub.stop()


def entry(url: str, models: list[str], **extra: Any) -> dict[str, Any]:
    """A worker as spokehub-agent reports it (the name is only a label to the hub)."""
    name = f"w-{url.rsplit(':', 1)[-1]}"
    return {"name": name, "url": url, "kind": "llamacpp", "models": models, **extra}


def test_allowed_networks_over_loopback(make_secure: Callable[..., SecureHub]) -> None:
    """Advertised addresses outside agents.allowed_networks are refused, with the URL and
    the rule in the message; inside, they are accepted."""
    narrow = make_secure(agents={"allowed_networks": ["127.0.0.2/32"]})
    agent = narrow.token("agent")
    reply = narrow.beat(agent, "box", entry("http://127.0.0.1:9", ["m"]))
    assert reply.status == 400, reply.body
    message = reply.json()["error"]["message"]
    assert "'http://127.0.0.1:9'" in message and "workers[0].url" in message
    assert "127.0.0.1 is not inside agents.allowed_networks" in message
    assert "127.0.0.2/32" in message
    assert narrow.workers() == {}

    wide = make_secure(agents={"allowed_networks": ["127.0.0.0/8"]})
    reply = wide.beat(wide.token("agent"), "box", entry("http://127.0.0.1:9", ["m"]))
    assert reply.status == 200 and reply.json()["accepted"] == ["box-llamacpp-9"], reply.body


def test_url_with_credentials_is_refused_and_never_echoed(
        make_secure: Callable[..., SecureHub]) -> None:
    secure = make_secure()
    reply = secure.beat(secure.token("agent"), "box",
                        entry("http://probe:hunter2-secret@127.0.0.1:9", ["m"]))
    assert reply.status == 400, reply.body
    message = reply.json()["error"]["message"]
    assert "credentials" in message and "http://***@127.0.0.1:9" in message
    assert "hunter2" not in reply.body.decode()
    assert secure.workers() == {}
    assert "hunter2" not in secure.hub.proc.log()


def test_agent_cannot_take_a_config_workers_name(
        make_secure: Callable[..., SecureHub], make_fault: Callable[..., FaultWorker]) -> None:
    """An agent that sends a config worker's name gets its own hub-made name; the config
    worker keeps its URL and its traffic."""
    static, rogue = make_fault("shared-model"), make_fault("shared-model")
    secure = make_secure(workers=[{"name": "static1", "url": static.url}])
    wait_until(lambda: secure.workers()["static1"]["healthy"])
    reply = secure.beat(secure.token("agent"), "box",
                        entry(rogue.url, ["shared-model"], name="static1"))
    assert reply.status == 200, reply.body
    own = f"box-llamacpp-{rogue.port}"
    assert reply.json()["accepted"] == [own] and reply.json()["rejected"] == []
    workers = secure.workers()
    assert workers["static1"]["url"] == static.url and workers["static1"]["source"] == "config"
    assert workers[own]["source"] == "agent:box" and workers[own]["url"] == rogue.url


def test_models_beyond_the_token_claim_are_dropped(
        make_secure: Callable[..., SecureHub], make_fault: Callable[..., FaultWorker]) -> None:
    """A token limited to ``box-model`` cannot draw traffic for ``victim-model``: not by
    advertising it, and not by its worker answering /v1/models with it."""
    static, rogue = make_fault("victim-model"), make_fault("victim-model")
    secure = make_secure(workers=[{"name": "static1", "url": static.url}])
    agent = secure.token("agent", models=["box-model"])
    reply = secure.beat(agent, "box", entry(rogue.url, ["box-model", "victim-model"]))
    assert reply.status == 200, reply.body
    doc = reply.json()
    [name] = doc["accepted"]
    # probed healthy (its /v1/models says victim-model), still only the token's model
    wait_until(lambda: secure.workers()[name]["healthy"])
    assert secure.workers()[name]["models"] == ["box-model"]
    served = set()
    for _ in range(8):
        answer = secure.chat("victim-model")
        assert answer.status == 200, answer.body
        served.add(answer.header("X-Spokehub-Worker"))
    assert served == {"static1"}
    assert name == f"box-llamacpp-{rogue.port}"
    assert "victim-model" in doc["warnings"][0]["reason"]
    # a worker with nothing the token allows is not registered at all
    reply = secure.beat(agent, "box", entry(rogue.url, ["victim-model"]))
    assert reply.json()["accepted"] == [] and "models claim" in reply.json()["rejected"][0][
        "reason"]
    assert name not in secure.workers()


def test_aliases_do_not_resolve_to_agent_models(
        make_secure: Callable[..., SecureHub], make_fault: Callable[..., FaultWorker]) -> None:
    """``aliases`` point at models the operator chose; an agent serving the target (or
    a model named like the alias) does not make the alias resolve to it."""
    rogue = make_fault("target-model")
    secure = make_secure(aliases={"friendly": "target-model"})
    reply = secure.beat(secure.token("agent"), "box",
                        entry(rogue.url, ["target-model", "friendly", "own-model"]))
    assert reply.status == 200, reply.body
    [name] = reply.json()["accepted"]
    wait_until(lambda: secure.workers()[name]["healthy"])
    for model in ("friendly", "target-model"):
        answer = secure.chat(model)
        assert answer.status in (404, 503), (model, answer.status, answer.body)
    assert secure.workers()[name]["models"] == ["own-model"]
    assert "alias" in reply.json()["warnings"][0]["reason"]


def test_vram_1e18_and_negative_slots_are_refused(make_secure: Callable[..., SecureHub]) -> None:
    secure = make_secure()
    agent = secure.token("agent")
    reply = request(secure.port, "POST", "/v1/agents/heartbeat",
                    '{"agent_id":"box","workers":['
                    '{"name":"a","url":"http://127.0.0.1:9","models":["m"],'
                    '"vram_free_mb":1e18},'
                    '{"name":"b","url":"http://127.0.0.1:10","models":["m"],"slots_total":-4},'
                    '{"name":"c","url":"http://127.0.0.1:11","models":["m"],"slots_total":2,'
                    '"slots_busy":1,"vram_free_mb":24576}]}', token=agent)
    assert reply.status == 200, reply.body
    doc = reply.json()
    workers = secure.workers()
    assert [w["vram_free_mb"] for w in workers.values()] == [24576], workers
    assert [w["slots_total"] for w in workers.values()] == [2], workers
    assert doc["accepted"] == ["box-llamacpp-11"]
    reasons = {r["name"]: r["reason"] for r in doc["rejected"]}
    assert "vram_free_mb: 1e+18 is out of range" in reasons["box-llamacpp-9"]
    assert "slots_total: -4 is out of range" in reasons["box-llamacpp-10"]


def test_ten_thousand_agent_ids_hit_the_cap(make_secure: Callable[..., SecureHub]) -> None:
    """One token tries 10,000 agent ids: the first agents.max_ids_per_token get in, the
    rest get 403 naming the limit, the hub holds only the allowed ids and stays healthy.
    One keep-alive connection; every call has a timeout and the loop a deadline."""
    secure = make_secure(agents={"max_ids_per_token": 8})
    token = secure.token("agent", "one-box")
    conn = http.client.HTTPConnection("127.0.0.1", secure.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    message = ""
    deadline = time.monotonic() + 240
    try:
        for i in range(10_000):
            assert time.monotonic() < deadline, f"stopped after {i} heartbeats"
            conn.request("POST", "/v1/agents/heartbeat",
                         json.dumps({"agent_id": f"id-{i}", "workers": []}), headers)
            resp = conn.getresponse()
            body = resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 403 and not message:
                message = json.loads(body)["error"]["message"]
    finally:
        conn.close()
    assert statuses == {200: 8, 403: 9_992}, statuses
    assert "agents.max_ids_per_token: 8" in message
    assert request(secure.port, "GET", "/healthz").status == 200
    admin = secure.token("admin", "ops")
    agents = request(secure.port, "GET", "/admin/agents", token=admin).json()["agents"]
    assert sorted(a["agent_id"] for a in agents) == sorted(f"id-{i}" for i in range(8))
    # a deregistered id frees a place
    assert request(secure.port, "DELETE", "/v1/agents/id-0", token=token).status == 200
    assert secure.beat(token, "id-10000").status == 200


def test_agent_workers_are_capped_in_total(make_secure: Callable[..., SecureHub]) -> None:
    secure = make_secure(agents={"max_workers": 2})
    a, b = secure.token("agent", "box-a"), secure.token("agent", "box-b")
    reply = secure.beat(a, "a", entry("http://127.0.0.1:9", ["m"]),
                        entry("http://127.0.0.1:10", ["m"]))
    assert reply.status == 200 and len(reply.json()["accepted"]) == 2, reply.body
    reply = secure.beat(b, "b", entry("http://127.0.0.1:11", ["m"]))
    assert reply.status == 429, reply.body
    assert "agents.max_workers: 2" in reply.json()["error"]["message"]
    assert reply.header("Retry-After")
    assert set(secure.workers()) == {"a-llamacpp-9", "a-llamacpp-10"}


def test_config_worker_credentials_are_refused_without_echoing_them(tmp_path: Path) -> None:
    """The upstream client cannot send URL credentials, so a config worker URL holding
    them is refused at start, and the error never repeats the password."""
    hub = HubProcess({"workers": [{"name": "locked", "url": "http://ops:pa55word@127.0.0.1:9"}]},
                     tmp_path)
    hub.write_config()
    done = subprocess.run([sys.executable, "-m", "hub", "check-config", str(hub.config_path)],
                          env=hub.env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "workers[0].url" in done.stderr and "credentials" in done.stderr
    assert "pa55word" not in done.stderr + done.stdout
