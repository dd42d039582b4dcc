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
                    "agents": {"ttl_s": 1.5, "remove_after_s": 60}, "workers": []})
    entry = {"name": "box1-llama", "url": worker.url, "kind": "llamacpp",
             "models": ["boxmodel"], "slots_total": 2, "slots_busy": 0, "vram_free_mb": 0}
    status, doc = send(hub, "/v1/agents/heartbeat", beat("box1", entry))
    assert status == 200 and doc["accepted"] == ["box1-llama"] and doc["rejected"] == []
    wait_for(lambda: hub.workers()["box1-llama"]["healthy"])
    client = openai.OpenAI(base_url=hub.base_url, api_key="x", max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model="boxmodel", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert resp.headers["x-spokehub-worker"] == "box1-llama"
    assert hub.workers()["box1-llama"]["source"] == "agent:box1"

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
    assert status == 200 and doc["removed"] == ["box1-llama"]
    assert "box1-llama" not in hub.workers()


def test_agent_cannot_take_static_or_foreign_workers(
        make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub({"workers": [{"name": "static1", "url": "http://127.0.0.1:9"}]})
    mine = {"name": "a-w", "url": "http://127.0.0.1:9", "kind": "llamacpp"}
    assert send(hub, "/v1/agents/heartbeat", beat("a", mine))[1]["accepted"] == ["a-w"]
    _, doc = send(hub, "/v1/agents/heartbeat", beat("b", {**mine, "url": "http://10.0.0.1:1"},
                                                    {**mine, "name": "static1"},
                                                    {"name": "bad", "url": "ftp://x"}))
    assert doc["accepted"] == []
    reasons = {r["name"]: r["reason"] for r in doc["rejected"]}
    assert "another agent" in reasons["a-w"]
    assert "hub config" in reasons["static1"]
    assert "url" in reasons["bad"]
    assert hub.workers()["a-w"]["url"] == "http://127.0.0.1:9"
    # malformed heartbeats are 400s, not crashes
    bad: Any
    for bad in ([], {"agent_id": ""}, {"agent_id": "x", "workers": "no"},
                {"agent_id": "x" * 100}):
        status, err = send(hub, "/v1/agents/heartbeat", bad)
        assert status == 400 and "error" in err


def test_agent_workers_survive_hub_restart(make_hub: Callable[..., HubProcess],
                                           tmp_path: Path) -> None:
    state = tmp_path / "agents.json"
    config = {"agents": {"ttl_s": 30, "state_file": str(state)}, "workers": []}
    hub = make_hub(config)
    entry = {"name": "persisted", "url": "http://127.0.0.1:9", "kind": "llamacpp",
             "models": ["m1"]}
    send(hub, "/v1/agents/heartbeat", beat("box9", entry))
    assert json.loads(state.read_text())["workers"][0]["name"] == "persisted"
    assert hub.stop() == 0
    hub2 = make_hub(config)
    restored = hub2.workers()["persisted"]
    assert restored["source"] == "agent:box9" and restored["models"] == ["m1"]
