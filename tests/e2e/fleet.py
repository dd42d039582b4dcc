"""Building blocks for the end-to-end tests (and bench/routing_p95.py).

Everything here is a real process or a real HTTP call: a hub with JWT auth whose
tokens are minted by ``python -m hub token issue``, the ``spokehub-agent`` daemon
reading a YAML config and a token file, and a bounded load generator that records
which worker served each request (``X-Spokehub-Worker``).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.tinymodel import write_model
from tests.support.hubproc import HubProcess
from tests.support.llama import CACHE, LlamaWorker, llama_server_bin
from tests.support.procs import ROOT, Proc

JWT_ENV = "SPOKEHUB_E2E_JWT_SECRET"
# Settings of the agent and the workers CLI that must not leak in from the shell
# running the tests.
_OPERATOR_ENV = ("SPOKEHUB_HUB_URL", "SPOKEHUB_AGENT_TOKEN", "SPOKEHUB_AGENT_TOKEN_FILE",
                 "SPOKEHUB_AGENT_ID", "SPOKEHUB_ADVERTISE_HOST", "SPOKEHUB_HEARTBEAT_S",
                 "SPOKEHUB_TOKEN")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this checkout importable, no operator
    settings from the calling shell."""
    env = {k: v for k, v in os.environ.items() if k not in _OPERATOR_ENV}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def jwt_secret() -> str:
    return secrets.token_hex(32)  # 64 characters: above HS256's 32-byte minimum


def auth_section() -> dict[str, Any]:
    return {"enabled": True, "keys": [{"kid": "e2e", "alg": "HS256", "secret_env": JWT_ENV}]}


def issue_token(hub: HubProcess, scope: str, tenant: str = "ops", ttl: str = "1h") -> str:
    """A token minted the way an operator does it: ``python -m hub token issue``."""
    hub.write_config()
    out = subprocess.run(
        [sys.executable, "-m", "hub", "token", "issue", "--config", str(hub.config_path),
         "--tenant", tenant, "--scope", scope, "--ttl", ttl],
        env=hub.env, capture_output=True, text=True, timeout=60,
        check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def wait_for(pred: Callable[[], bool], timeout: float, what: str = "condition",
             interval: float = 0.05) -> float:
    """Poll ``pred`` until it is true; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not met within {timeout:g}s")
        time.sleep(interval)


def call(url: str, method: str = "GET", token: str | None = None, body: Any = None,
         timeout: float = 10.0) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body or None, headers) of one HTTP call; never raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status, resp_headers = resp.status, dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status, resp_headers = exc.code, dict(exc.headers.items())
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    return status, doc, {k.lower(): v for k, v in resp_headers.items()}


def admin_workers(hub: HubProcess, token: str | None) -> dict[str, dict[str, Any]]:
    status, doc, _ = call(f"{hub.url}/admin/workers", token=token)
    assert status == 200, doc
    return {w["name"]: w for w in doc["workers"]}


def admin_agents(hub: HubProcess, token: str | None) -> list[str]:
    status, doc, _ = call(f"{hub.url}/admin/agents", token=token)
    assert status == 200, doc
    return [a["agent_id"] for a in doc["agents"]]


class AgentProcess:
    """The real ``spokehub-agent`` daemon, configured the way an operator would:
    a YAML file plus a token file (mode 0600)."""

    def __init__(self, workdir: Path, hub_url: str, token: str,
                 workers: Iterable[LlamaWorker], *, agent_id: str = "box1",
                 heartbeat_s: float = 1.0, log_level: str = "info",
                 env: dict[str, str] | None = None) -> None:
        self.agent_id = agent_id
        self.config_path = workdir / f"agent-{agent_id}.yaml"
        self.token_path = workdir / f"agent-{agent_id}.token"
        self.token_path.write_text(token + "\n")
        self.token_path.chmod(0o600)
        self.config_path.write_text(yaml.safe_dump({
            "hub_url": hub_url, "agent_id": agent_id, "token_file": str(self.token_path),
            "heartbeat_s": heartbeat_s, "gpu": "none", "log_level": log_level,
            "workers": [{"url": w.url, "kind": "llamacpp"} for w in workers]}))
        self.proc = Proc([sys.executable, "-m", "agent.cli", "--config", str(self.config_path)],
                         workdir / f"agent-{agent_id}.log", child_env(**(env or {})))

    def worker_name(self, worker: LlamaWorker) -> str:
        """The name the agent derives for a worker: ``<agent_id>-<kind>-<port>``."""
        return f"{self.agent_id}-llamacpp-{worker.port}"

    def start(self) -> AgentProcess:
        self.proc.start()
        return self

    def alive(self) -> bool:
        return self.proc.alive()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.signal(sig)

    def kill(self) -> None:
        self.proc.kill()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit code."""
        if self.proc.proc is not None and self.proc.proc.poll() is None:
            # A stopped (SIGSTOP) agent must wake up to handle SIGTERM.
            os.kill(self.proc.pid, signal.SIGCONT)
        return self.proc.stop(timeout)

    def log(self) -> str:
        return self.proc.log()


# -- load --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    index: int
    status: int
    worker: str
    started: float  # time.monotonic() when the request was sent
    ended: float  # ... and when the whole answer had arrived

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


def chat_body(max_tokens: int, model: str = "tiny") -> bytes:
    """A non-stream chat request that generates exactly ``max_tokens`` tokens
    (``ignore_eos``), so every request costs the same work."""
    return json.dumps({"model": model, "max_tokens": max_tokens, "ignore_eos": True,
                       "temperature": 0,
                       "messages": [{"role": "user", "content": "Tell me about load."}]}
                      ).encode()


def run_load(hub_port: int, body: bytes, requests: int, concurrency: int, *,
             token: str | None = None, timeout_s: float = 60.0) -> list[Result]:
    """Send ``requests`` POST /v1/chat/completions at ``concurrency`` (one keep-alive
    connection per client thread). Bounded: every request has ``timeout_s``."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lock = threading.Lock()
    next_index = 0
    results: list[Result] = []
    errors: list[BaseException] = []

    def client() -> None:
        nonlocal next_index
        conn = http.client.HTTPConnection("127.0.0.1", hub_port, timeout=timeout_s)
        try:
            while True:
                with lock:
                    if next_index >= requests or errors:
                        return
                    index = next_index
                    next_index += 1
                started = time.monotonic()
                conn.request("POST", "/v1/chat/completions", body, headers)
                resp = conn.getresponse()
                resp.read()
                result = Result(index, resp.status, resp.getheader("X-Spokehub-Worker") or "",
                                started, time.monotonic())
                with lock:
                    results.append(result)
        except BaseException as exc:  # reported to the caller below
            with lock:
                errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"load-{i}", daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s * requests)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "load threads did not finish"
    return sorted(results, key=lambda r: r.index)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


# -- the mixed fleet of the routing tests and bench -----------------------------------------

# Two real llama.cpp servers with the same model name, both single-threaded (the test
# machine may have two cores). The small box has one slot, so requests queue inside it
# one at a time, and stands in for older hardware by running a 4x wider variant of the
# tiny model (same tokenizer and alias): every token costs it about three times the
# compute. The big box runs the tiny model with four slots decoded together.
SLOW_EMBD = 256
BIG_SLOTS = 4


def slow_model() -> Path:
    out = CACHE / "models" / f"tiny-wide{SLOW_EMBD}-s2.gguf"
    if not out.exists():
        vocab = llama_server_bin().parent.parent / "vocab" / "ggml-vocab-llama-spm.gguf"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_model(vocab, out, seed=2, name="tiny-wide", n_embd=SLOW_EMBD,
                    n_ff=2 * SLOW_EMBD)
    return out


def start_fleet(logdir: Path) -> tuple[LlamaWorker, LlamaWorker]:
    """(small box, big box), started and answering."""
    small = LlamaWorker("tiny", logdir, seed=0, slots=1, threads=1, ctx=2048,
                        extra=["-m", str(slow_model())])  # the last -m wins
    big = LlamaWorker("tiny", logdir, seed=1, slots=BIG_SLOTS, threads=1)
    try:
        for w in (small, big):
            w.start(wait=False)
        for w in (small, big):
            w.start_wait()
        _, doc, _ = call(f"{small.url}/v1/models")
        assert doc["data"][0]["meta"]["n_embd"] == SLOW_EMBD, doc
    except BaseException:
        small.stop()
        big.stop()
        raise
    return small, big


def fleet_hub_config(policy: str) -> dict[str, Any]:
    """A hub with no static workers (the agent registers both boxes) and fast probes."""
    return {"routing": {"policy": policy},
            "health": {"interval_s": 0.5, "timeout_s": 2},
            # auth is off here: agent registration must be switched on explicitly
            "agents": {"enabled": True, "ttl_s": 30, "remove_after_s": 120},
            # Slow-worker ejection is a separate mechanism: off, so only the policy differs.
            "resilience": {"outlier": {"max_ejected_fraction": 0}},
            "log_level": "warning", "workers": []}


@contextmanager
def fleet_hub(policy: str, small: LlamaWorker, big: LlamaWorker,
              workdir: Path) -> Iterator[tuple[HubProcess, str, str]]:
    """A hub with ``policy`` and an agent that registered both boxes with their slot
    counts: (hub, small box's worker name, big box's worker name)."""
    hub = HubProcess(fleet_hub_config(policy), workdir, child_env())
    agent = AgentProcess(workdir, hub.url, "auth-is-off", [small, big],
                         agent_id=f"fleet-{policy.replace('_', '-')}")
    try:
        hub.start()
        agent.start()
        names = agent.worker_name(small), agent.worker_name(big)
        wait_registered(hub, names)
        yield hub, names[0], names[1]
    finally:
        agent.stop()
        hub.stop()


def wait_registered(hub: HubProcess, names: Iterable[str], token: str | None = None,
                    timeout: float = 30.0) -> None:
    """Until every named worker is healthy with its slot count reported."""
    wanted = list(names)

    def ready() -> bool:
        workers = admin_workers(hub, token)
        return all(n in workers and workers[n]["healthy"] and workers[n]["slots_total"]
                   for n in wanted)

    wait_for(ready, timeout, f"workers {', '.join(wanted)} registered and healthy")


def in_flight_at(results: Iterable[Result], worker: str, t: float) -> int:
    """How many of ``worker``'s requests were running at ``t`` (as the client saw it)."""
    return sum(1 for r in results if r.worker == worker and r.started < t < r.ended)


def queued_on(results: list[Result], worker: str, margin_s: float = 0.05) -> list[Result]:
    """The requests ``worker`` got while another of its requests was still running (by
    more than ``margin_s``, which absorbs the moment between the hub freeing the slot
    and the client seeing the answer). On a one-slot worker each of them waited in the
    worker's own queue."""
    mine = [r for r in results if r.worker == worker]
    return [r for r in mine
            if any(q is not r and q.started < r.started and q.ended > r.started + margin_s
                   for q in mine)]
