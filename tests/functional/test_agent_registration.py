"""Hub side of agents: heartbeats register real llama.cpp workers; TTL, ownership, persistence."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker

ON = {"enabled": True}


def send(hub: HubProcess, path: str, doc: Any = None, method: str = "POST") -> tuple[int, Any]:
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(f"{hub.url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
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
    client = openai.OpenAI(base_url=hub.base_url, api_key="x", max_retries=0)
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
