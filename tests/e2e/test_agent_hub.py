"""The real spokehub-agent against the real hub, end to end.

Every piece is a real process: a hub with JWT auth on (HS256 secret from the
environment) persisting agent workers in a state file, a llama.cpp server with the tiny
model, and ``spokehub-agent`` reading a YAML config and a token file minted with
``python -m hub token issue``. Clients use the openai SDK with an infer-scoped token.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.fleet import (
    AgentProcess,
    admin_agents,
    admin_workers,
    call,
    issue_token,
    wait_for,
)
from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker

HEARTBEAT_S = 1.0
# Scheduling noise on a busy two-core test machine, on top of the protocol's own bounds.
SLACK_S = 1.0
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]


@dataclass
class Box:
    """One GPU box as the hub sees it: a worker, its agent, and the hub's tokens."""

    hub: HubProcess
    llama: LlamaWorker
    agent: AgentProcess
    admin: str
    infer: str
    agent_token: str

    @property
    def name(self) -> str:
        return self.agent.worker_name(self.llama)


def chat(hub: HubProcess, token: str) -> tuple[int, str, Any]:
    """(status, serving worker, JSON body) of one small chat request."""
    status, doc, headers = call(f"{hub.base_url}/chat/completions", "POST", token,
                                {"model": "tiny", "max_tokens": 1, "messages": MESSAGES},
                                timeout=30)
    return status, headers.get("x-spokehub-worker", ""), doc


def sdk_answer(hub: HubProcess, token: str) -> tuple[str, str]:
    """(serving worker, answer text) through the openai SDK."""
    client = closing(openai.OpenAI(base_url=hub.base_url, api_key=token, max_retries=0, timeout=30))
    raw = client.chat.completions.with_raw_response.create(model="tiny", max_tokens=4,
                                                           messages=MESSAGES)
    completion = raw.parse()
    return raw.headers["x-spokehub-worker"], completion.choices[0].message.content or ""


def wait_routable(box: Box, timeout: float = 15.0) -> tuple[float, float]:
    """Seconds from now until the hub lists the worker (its agent's first heartbeat
    landed), and until the worker serves a request."""
    start = time.monotonic()
    registered: float | None = None
    deadline = start + timeout
    while time.monotonic() < deadline:
        if registered is None and box.name in admin_workers(box.hub, box.admin):
            registered = time.monotonic() - start
        if registered is not None:
            status, worker, _ = chat(box.hub, box.infer)
            if status == 200 and worker == box.name:
                return registered, time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{box.name} not routable within {timeout:g}s "
                         f"(registered after {registered}s)\n{box.agent.log()}")


def start_box(make_secure_hub: Callable[..., HubProcess],
              make_llama: Callable[..., LlamaWorker],
              make_agent: Callable[..., AgentProcess], *, scope: str = "agent",
              log_level: str = "info", **hub_kw: Any) -> Box:
    llama = make_llama("tiny", slots=2)
    hub = make_secure_hub(**hub_kw)
    admin, infer = issue_token(hub, "admin"), issue_token(hub, "infer")
    token = issue_token(hub, scope)
    agent = make_agent(hub, token, [llama], heartbeat_s=HEARTBEAT_S, log_level=log_level)
    return Box(hub, llama, agent, admin, infer, token)


def exit_code(agent: AgentProcess, timeout: float = 15.0) -> int:
    assert agent.proc.proc is not None
    return agent.proc.proc.wait(timeout)


def test_worker_is_routable_within_a_heartbeat_and_sigterm_deregisters(
        make_secure_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        make_agent: Callable[..., AgentProcess]) -> None:
    box = start_box(make_secure_hub, make_llama, make_agent)
    registered, routable = wait_routable(box)
    assert registered < 10, "the agent's first heartbeat took too long"
    # The hub probes a newly registered worker before routing to it: well inside one
    # heartbeat interval.
    assert routable - registered <= HEARTBEAT_S + SLACK_S, (registered, routable)

    worker, text = sdk_answer(box.hub, box.infer)
    assert worker == box.name and isinstance(text, str)
    listed = admin_workers(box.hub, box.admin)[box.name]
    assert (listed["source"], listed["url"], listed["kind"], listed["models"],
            listed["slots_total"]) == ("agent:box1", box.llama.url, "llamacpp", ["tiny"], 2)
    assert admin_agents(box.hub, box.admin) == ["box1"]

    box.agent.signal(signal.SIGTERM)
    assert exit_code(box.agent) == 0, box.agent.log()
    assert box.name not in admin_workers(box.hub, box.admin)
    status, _, doc = chat(box.hub, box.infer)
    assert status == 404 and doc["error"]["code"] == "model_not_found", doc
    log = box.agent.log()
    assert "received SIGTERM" in log and "deregistered from hub" in log
    assert box.agent_token not in log and "Traceback" not in log


def test_sigkill_leaves_the_worker_until_the_ttl_then_503(
        make_secure_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        make_agent: Callable[..., AgentProcess]) -> None:
    ttl_s = 3.0
    box = start_box(make_secure_hub, make_llama, make_agent, ttl_s=ttl_s)
    wait_routable(box)
    box.agent.kill()  # SIGKILL: no chance to deregister
    killed = time.monotonic()
    assert exit_code(box.agent) == -signal.SIGKILL

    # The hub cannot tell a dead agent from a slow one until the TTL has passed.
    worker, _ = sdk_answer(box.hub, box.infer)
    assert worker == box.name
    assert time.monotonic() - killed < ttl_s - HEARTBEAT_S, "too slow to check in time"

    def unavailable() -> bool:
        status, _, doc = chat(box.hub, box.infer)
        if status == 503:
            assert doc["error"]["code"] == "no_healthy_worker", doc
            return True
        assert status == 200, doc
        return False

    wait_for(unavailable, ttl_s + 5, "503 after the TTL")
    after = time.monotonic() - killed
    # Last heartbeat at most one interval before the kill; expiry runs every second.
    assert ttl_s - HEARTBEAT_S - 0.5 <= after <= ttl_s + 1.0 + SLACK_S, after
    # Not forgotten yet (that takes agents.remove_after_s): it comes back when its
    # agent reports again.
    assert box.name in admin_workers(box.hub, box.admin)


def test_hub_restart_keeps_the_agent_worker(
        make_secure_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        make_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    box = start_box(make_secure_hub, make_llama, make_agent, ttl_s=15.0)
    wait_routable(box)
    # Freeze the agent so that only the state file can bring the worker back.
    box.agent.signal(signal.SIGSTOP)
    assert box.hub.stop() == 0
    state = json.loads((tmp_path / "agents.json").read_text())
    assert [w["name"] for w in state["workers"]] == [box.name]

    box.hub.start()
    listed = admin_workers(box.hub, box.admin)
    assert listed[box.name]["source"] == "agent:box1"
    assert admin_agents(box.hub, box.admin) == [], "no heartbeat can have arrived yet"
    wait_for(lambda: chat(box.hub, box.infer)[:2] == (200, box.name), 10,
             "restored worker serving")
    assert sdk_answer(box.hub, box.infer)[0] == box.name

    # The agent carries on against the new hub process, without duplicates.
    box.agent.signal(signal.SIGCONT)
    wait_for(lambda: admin_agents(box.hub, box.admin) == ["box1"], 2 * HEARTBEAT_S + 2 * SLACK_S,
             "agent heartbeating to the restarted hub")
    assert [n for n, w in admin_workers(box.hub, box.admin).items()
            if w["source"] == "agent:box1"] == [box.name]
    assert box.agent.alive()


def test_agent_with_an_infer_token_is_refused_and_keeps_running(
        make_secure_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        make_agent: Callable[..., AgentProcess]) -> None:
    box = start_box(make_secure_hub, make_llama, make_agent, scope="infer", log_level="debug")
    # Three attempts (backoff 1 s, 2 s, ...), each refused.
    wait_for(lambda: box.agent.log().count("hub still failing") >= 2, 15,
             "three refused heartbeats")
    assert box.agent.alive()
    assert admin_workers(box.hub, box.admin) == {}
    assert admin_agents(box.hub, box.admin) == []
    log = box.agent.log()
    assert log.count("refused the agent token") == 1, log
    assert "HTTP 403" in log and "'agent' scope" in log
    assert box.agent_token not in log and "Traceback" not in log

    box.agent.signal(signal.SIGTERM)
    assert exit_code(box.agent) == 0


def test_agent_outlives_a_60s_hub_outage_and_reregisters_promptly(
        make_secure_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        make_agent: Callable[..., AgentProcess]) -> None:
    box = start_box(make_secure_hub, make_llama, make_agent, ttl_s=3.0)
    wait_routable(box)
    assert box.hub.stop() == 0
    down = time.monotonic()
    while time.monotonic() - down < 60:
        assert box.agent.alive(), box.agent.log()
        time.sleep(1)

    box.hub.start()
    # The hub restored the worker from its state file, but its agent has been silent
    # for longer than the TTL: no traffic until the agent reports again.
    assert box.name in admin_workers(box.hub, box.admin)
    back = wait_for(lambda: admin_agents(box.hub, box.admin) == ["box1"], 35,
                    "agent re-registered", interval=0.02)
    wait_for(lambda: chat(box.hub, box.infer)[:2] == (200, box.name), 5, "worker serving")
    assert box.agent.alive()
    log = box.agent.log()
    # One line when the hub went away (maybe two: disconnect, then refused), not one
    # per attempt; one when it is back.
    assert 1 <= sum("unavailable" in line for line in log.splitlines()) <= 2, log
    registered = [line for line in log.splitlines() if "registered with hub" in line]
    assert len(registered) == 2 and "failed attempt(s)" in registered[1], log
    assert back <= 2 * HEARTBEAT_S + SLACK_S, (
        f"the agent re-registered {back:.1f}s after the hub came back; heartbeat "
        f"interval {HEARTBEAT_S:g}s")
