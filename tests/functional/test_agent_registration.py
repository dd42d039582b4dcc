"""Hub side of agents: heartbeats register real llama.cpp workers; TTL, ownership,
persistence; and what a hub with auth off does about agents and cross-site posts.

Auth is off here, so every hub that takes heartbeats says ``agents.enabled: true``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker

ON = {"enabled": True}


def send(hub: HubProcess, path: str, doc: Any = None, method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if doc is None else doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    req = urllib.request.Request(f"{hub.url}{path}", data=data, method=method,
                                 headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def beat(agent_id: str, *workers: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": agent_id, "version": "0.1.0", "interval_s": 1,
            "host": {"hostname": agent_id, "gpus": [], "cpu_count": 2},
            "workers": list(workers)}


def wait_for(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_heartbeat_registers_routable_worker_and_ttl_expires_it(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    worker = make_llama("boxmodel", seed=0)
    hub = make_hub({"health": {"interval_s": 0.5, "timeout_s": 1},
                    "agents": {**ON, "ttl_s": 1.5, "remove_after_s": 60}, "workers": []})
    entry = {"name": "box1-llama", "url": worker.url, "kind": "llamacpp",
             "models": ["boxmodel"], "slots_total": 2, "slots_busy": 0, "vram_free_mb": 0}
    status, doc = send(hub, "/v1/agents/heartbeat", beat("box1", entry))
    name = f"box1-llamacpp-{worker.port}"  # the hub's name; the agent's is a label
    assert status == 200 and doc["accepted"] == [name] and doc["rejected"] == []
    wait_for(lambda: hub.workers()[name]["healthy"])
    client = closing(openai.OpenAI(base_url=hub.base_url, api_key="x", max_retries=0))
    resp = client.chat.completions.with_raw_response.create(
        model="boxmodel", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert resp.headers["x-spokehub-worker"] == name
    assert hub.workers()[name]["source"] == "agent:box1"

    # the agent goes quiet: after the TTL the worker gets no traffic
    time.sleep(2.6)
    status, doc = send(hub, "/v1/chat/completions", {
        "model": "boxmodel", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 503, doc
    # it reports again: back in rotation at once
    send(hub, "/v1/agents/heartbeat", beat("box1", entry))
    resp = client.chat.completions.with_raw_response.create(
        model="boxmodel", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert resp.http_response.status_code == 200

    status, doc = send(hub, "/v1/agents/box1", method="DELETE")
    assert status == 200 and doc["removed"] == [name]
    assert name not in hub.workers()


def test_agent_cannot_take_static_or_foreign_workers(
        make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub({"agents": ON,
                    "workers": [{"name": "static1", "url": "http://127.0.0.1:9"}]})
    mine = {"name": "a-w", "url": "http://127.0.0.1:9", "kind": "llamacpp", "models": ["m"]}
    assert send(hub, "/v1/agents/heartbeat", beat("a", mine))[1]["accepted"] == \
        ["a-llamacpp-9"]
    # Names an agent sends are labels: b gets its own names, nobody's worker moves.
    _, doc = send(hub, "/v1/agents/heartbeat", beat(
        "b", {**mine, "name": "a-llamacpp-9", "url": "http://127.0.0.1:1"},
        {**mine, "name": "static1", "url": "http://127.0.0.1:2"},
        {"name": "bad", "url": "ftp://x"}))
    assert doc["accepted"] == ["b-llamacpp-1", "b-llamacpp-2"]
    assert [r["name"] for r in doc["rejected"]] == ["bad"]
    assert "url" in doc["rejected"][0]["reason"]
    workers = hub.workers()
    assert workers["a-llamacpp-9"]["url"] == "http://127.0.0.1:9"
    assert workers["static1"]["url"] == "http://127.0.0.1:9"
    assert workers["static1"]["source"] == "config"
    # malformed heartbeats are 400s, not crashes
    bad: Any
    for bad in ([], {"agent_id": ""}, {"agent_id": "x", "workers": "no"},
                {"agent_id": "x" * 100}):
        status, err = send(hub, "/v1/agents/heartbeat", bad)
        assert status == 400 and "error" in err


def test_agent_workers_survive_hub_restart(make_hub: Callable[..., HubProcess],
                                           tmp_path: Path) -> None:
    state = tmp_path / "agents.json"
    config = {"agents": {**ON, "ttl_s": 30, "state_file": str(state)}, "workers": []}
    hub = make_hub(config)
    entry = {"name": "persisted", "url": "http://127.0.0.1:9", "kind": "llamacpp",
             "models": ["m1"]}
    send(hub, "/v1/agents/heartbeat", beat("box9", entry))
    assert json.loads(state.read_text())["workers"][0]["name"] == "box9-llamacpp-9"
    assert hub.stop() == 0
    hub2 = make_hub(config)
    restored = hub2.workers()["box9-llamacpp-9"]
    assert restored["source"] == "agent:box9" and restored["models"] == ["m1"]


# -- auth off --------------------------------------------------------------------------


def test_auth_off_warns_and_keeps_agents_out(make_hub: Callable[..., HubProcess]) -> None:
    """Without auth, the hub says so loudly at start, and heartbeats are refused unless
    agents.enabled is set explicitly."""
    hub = make_hub({"workers": []})
    lines = [json.loads(line) for line in hub.proc.log().splitlines() if line.startswith("{")]
    loud = [line for line in lines if "AUTH IS OFF" in line["msg"]]
    assert loud and loud[0]["level"] == "warning", lines
    entry = {"url": "http://127.0.0.1:9", "kind": "llamacpp", "models": ["m"]}
    status, doc = send(hub, "/v1/agents/heartbeat", beat("box", entry))
    assert status == 404 and "agents.enabled" in doc["error"]["message"]
    assert hub.workers() == {}

    hub = make_hub({"agents": ON, "workers": []})
    assert any("AGENT REGISTRATION IS ON WITHOUT AUTH" in line
               for line in hub.proc.log().splitlines())
    status, doc = send(hub, "/v1/agents/heartbeat", beat("box", entry))
    assert status == 200 and doc["accepted"] == ["box-llamacpp-9"]


def test_state_changing_routes_take_only_json(make_hub: Callable[..., HubProcess]) -> None:
    """No cross-site form post: a page elsewhere can make a browser POST form data,
    text/plain or an empty body with no type, never application/json (that needs a
    CORS preflight). Those get 415 on the heartbeat, drain, undrain and reload."""
    hub = make_hub({"agents": ON, "workers": [{"name": "w1", "url": "http://127.0.0.1:9"}]})
    entry = {"url": "http://127.0.0.1:9", "kind": "llamacpp", "models": ["m"]}
    body = json.dumps(beat("box", entry)).encode()
    forms = [{"Content-Type": "text/plain"},
             {"Content-Type": "application/x-www-form-urlencoded"},
             {"Content-Type": "multipart/form-data; boundary=x"},
             {"Origin": "https://evil.example"}]  # fetch(..., {mode: "no-cors"}), no type
    for path in ("/v1/agents/heartbeat", "/admin/workers/w1/drain",
                 "/admin/workers/w1/undrain", "/admin/reload"):
        for headers in forms:
            data = None if "Origin" in headers else body
            status, doc = send(hub, path, data, headers=headers)
            assert status == 415, (path, headers, status, doc)
            assert "application/json" in doc["error"]["message"]
    assert hub.workers() == {"w1": hub.workers()["w1"]}
    assert hub.workers()["w1"]["draining"] is False
    # JSON is fine, and so is a bare `curl -X POST` (no body, no type, no Origin)
    assert send(hub, "/v1/agents/heartbeat", body)[0] == 200
    status, doc = send(hub, "/admin/workers/w1/drain", b"",
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and doc["draining"] is True
    status, doc = send(hub, "/admin/workers/w1/undrain", method="POST", headers={})
    assert status == 200 and doc["draining"] is False
    # a browser that says the request comes from another site is refused outright
    status, doc = send(hub, "/admin/workers/w1/drain", b"{}", headers={
        "Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "Cross-site" in doc["error"]["message"]
    assert hub.workers()["w1"]["draining"] is False
