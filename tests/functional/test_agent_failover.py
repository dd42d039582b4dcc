"""A real agent with ``hub_urls: [A, B]`` in front of a real llama.cpp worker: hub A
is killed (SIGKILL), the agent's heartbeats reach hub B, and B routes to the worker.

Auth is off here, so both hubs say ``agents.enabled: true``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import yaml

from tests.e2e.fleet import child_env
from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.procs import Proc

DEADLINE_S = 60.0
MSG: list[Any] = [{"role": "user", "content": "hi"}]


def wait_for(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S:.0f}s"
        time.sleep(0.05)


def healthy(hub: HubProcess, name: str) -> bool:
    try:
        worker = hub.workers().get(name)
    except OSError:
        return False
    return worker is not None and worker["healthy"] and not worker["agent_stale"]


def served_by(hub: HubProcess) -> str:
    client = closing(openai.OpenAI(base_url=hub.base_url, api_key="x", max_retries=0,
                                   timeout=30))
    resp = client.chat.completions.with_raw_response.create(model="boxmodel", messages=MSG,
                                                            max_tokens=1)
    name: str = resp.headers["x-spokehub-worker"]
    return name


def test_agent_fails_over_to_hub_b_and_b_routes_to_its_worker(
        tmp_path: Path, make_llama: Callable[..., LlamaWorker],
        make_hub: Callable[..., HubProcess]) -> None:
    worker = make_llama("boxmodel", seed=0)
    config = {"health": {"interval_s": 0.5, "timeout_s": 1},
              "agents": {"enabled": True, "ttl_s": 5, "remove_after_s": 60}, "workers": []}
    hub_a, hub_b = make_hub(config), make_hub(config)
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(yaml.safe_dump({
        "hub_urls": [hub_a.url, hub_b.url], "agent_id": "box1", "heartbeat_s": 0.5,
        "hub_failback_s": 3600, "gpu": "none", "log_level": "info",
        "workers": [{"url": worker.url, "kind": "llamacpp"}]}))
    agent = Proc([sys.executable, "-m", "agent.cli", "--config", str(agent_yaml)],
                 tmp_path / "agent.log", child_env(SPOKEHUB_AGENT_TOKEN="auth-is-off"))
    name = f"box1-llamacpp-{worker.port}"
    agent.start()
    try:
        wait_for(lambda: healthy(hub_a, name), "the worker registered on hub A")
        assert served_by(hub_a) == name
        assert name not in hub_b.workers(), "sticky: heartbeats go to one hub"

        hub_a.proc.kill()  # SIGKILL: a crashed hub
        wait_for(lambda: healthy(hub_b, name), "the worker registered on hub B")
        assert served_by(hub_b) == name
        log = agent.log()
        assert log.count("failing over to") == 1, log
        assert f"hub {hub_a.url} unavailable" in log
        assert agent.alive()
    finally:
        assert agent.stop() == 0, agent.log()
    assert "deregistered from hub " + hub_b.url in agent.log()
    wait_for(lambda: name not in hub_b.workers(), "the agent deregistered from hub B")
