"""Spill-over to a fallback upstream, with real parts.

The fallback provider is a second spokehub hub process, with JWT auth on, in front of a
real llama-server that serves the model under another name (``tiny-remote``); the first
hub reaches it as a ``tier: fallback`` openai-kind worker with a key from an environment
variable, and its ``model_map`` renames ``tiny``. Local workers are real llama-servers,
or fault workers where a test needs one that holds a request.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.support.closing import closing
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.observe import post, request_lines, scrape, wait_for

MakeHub = Callable[..., HubProcess]
MakeLlama = Callable[..., LlamaWorker]
MakeFault = Callable[..., FaultWorker]
DEADLINE_S = 60.0
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
KEY_ENV = "SPOKEHUB_TEST_FALLBACK_KEY"


@dataclass
class Provider:
    """The fallback provider: a hub with auth on, and a key for the first hub."""

    hub: HubProcess
    key: str


@dataclass
class Front:
    """The hub clients talk to, with auth on, and tokens for its tenants."""

    hub: HubProcess
    auth: dict[str, Any]
    env: dict[str, str]

    def token(self, tenant: str, *scopes: str) -> str:
        return issue_token(parse_auth(self.auth), tenant=tenant,
                           scopes=list(scopes or ["infer"]), ttl_s=3600, environ=self.env)

    def client(self, tenant: str) -> openai.OpenAI:
        return closing(openai.OpenAI(base_url=self.hub.base_url, api_key=self.token(tenant),
                                     max_retries=0, timeout=120))

    def workers(self) -> dict[str, dict[str, Any]]:
        req = urllib.request.Request(f"{self.hub.url}/admin/workers", headers={
            "Authorization": f"Bearer {self.token('ops', 'admin')}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return {w["name"]: w for w in json.load(resp)["workers"]}

    def chat(self, tenant: str, **body: Any) -> tuple[int, dict[str, str], bytes]:
        return post(f"{self.hub.base_url}/chat/completions",
                    {"model": "tiny", "messages": MESSAGES, **body},
                    {"Authorization": f"Bearer {self.token(tenant)}"}, timeout=120)

    def spills(self, reason: str) -> float:
        return scrape(self.hub).get("spokehub_spillovers_total", reason=reason, model="tiny")


def _auth(env_name: str) -> dict[str, Any]:
    return {"enabled": True, "keys": [{"kid": "k", "alg": "HS256", "secret_env": env_name}]}


@pytest.fixture
def provider(make_llama: MakeLlama, make_hub: MakeHub) -> Provider:
    remote = make_llama(alias="tiny-remote", seed=1, slots=1, ctx=16384)
    env = {"SPOKEHUB_TEST_PROVIDER_SECRET": secrets.token_hex(32)}
    auth = _auth("SPOKEHUB_TEST_PROVIDER_SECRET")
    hub = make_hub({"health": {"interval_s": 0.5, "timeout_s": 1}, "auth": auth,
                    "workers": [{"name": "remote", "url": remote.url}]}, env=env)
    key = issue_token(parse_auth(auth), tenant="spokehub-spill", scopes=["infer"],
                      ttl_s=3600, environ=env)
    return Provider(hub, key)


@pytest.fixture
def front(make_hub: MakeHub, provider: Provider) -> Iterator[Callable[..., Front]]:
    def make(local: list[dict[str, Any]], spill: dict[str, Any], **extra: Any) -> Front:
        env = {"SPOKEHUB_TEST_FRONT_SECRET": secrets.token_hex(32), KEY_ENV: provider.key}
        auth = _auth("SPOKEHUB_TEST_FRONT_SECRET")
        fallback = {"name": "cloud", "kind": "openai", "url": provider.hub.base_url,
                    "tier": "fallback", "api_key_env": KEY_ENV,
                    "model_map": {"tiny": "tiny-remote"}}
        hub = make_hub({"health": {"interval_s": 0.5, "timeout_s": 1}, "auth": auth,
                        "workers": [*local, fallback], "spill": spill, **extra}, env=env)
        out = Front(hub, auth, env)
        wait_for(lambda: out.workers()["cloud"]["healthy"], DEADLINE_S, "fallback probed up")
        assert out.workers()["cloud"]["tier"] == "fallback"
        return out

    yield make


def _busy_slots(worker: LlamaWorker) -> int:
    with urllib.request.urlopen(f"{worker.url}/slots", timeout=5) as resp:
        slots: list[dict[str, Any]] = json.load(resp)
    return sum(1 for s in slots if s.get("is_processing"))


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_all_local_down_enabled_tenant_spills_disabled_tenant_gets_503(
        make_llama: MakeLlama, front: Callable[..., Front], provider: Provider) -> None:
    local = make_llama(seed=0)
    hub = front([{"name": "w0", "url": local.url}],
                {"enabled": False, "tenants": {"acme": True}})
    acme = hub.client("acme")
    raw = acme.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES,
                                                         max_tokens=2)
    assert raw.headers["x-spokehub-tier"] == "local"  # the fleet is up: it stays local
    assert raw.headers["x-spokehub-worker"] == "w0"

    local.kill()
    wait_for(lambda: not hub.workers()["w0"]["healthy"], DEADLINE_S, "w0 marked down")

    raw = acme.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES,
                                                         max_tokens=2)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-spokehub-tier"] == "fallback"
    assert raw.headers["x-spokehub-worker"] == "cloud"
    answer = raw.parse()
    assert answer.model == "tiny-remote"  # the provider's name: answers are not renamed
    assert answer.choices[0].message.content is not None

    with acme.chat.completions.with_streaming_response.create(
            model="tiny", messages=MESSAGES, max_tokens=3, stream=True) as resp:
        assert resp.headers["x-spokehub-tier"] == "fallback"
        chunks = list(resp.parse())
    assert chunks and chunks[-1].choices[0].finish_reason is not None

    status, _, body = hub.chat("globex", max_tokens=2)  # spill not enabled for it
    assert status == 503, body
    assert json.loads(body)["error"]["code"] == "no_healthy_worker"

    assert hub.spills("no_local") == 2
    lines = {(line["tenant"], line["tier"], line["worker"], line["status"])
             for line in request_lines(hub.hub)}
    assert ("acme", "fallback", "cloud", 200) in lines
    assert ("globex", "local", None, 503) in lines
    # The provider hub saw the first hub's requests under its own model name.
    seen = [(line["tenant"], line["model"]) for line in request_lines(provider.hub)]
    assert seen == [("spokehub-spill", "tiny-remote")] * 2
    # And the fallback's requests show in the ordinary metrics, by its worker name.
    assert scrape(hub.hub).get("spokehub_requests_total", route="/chat/completions",
                               model="tiny", worker="cloud", status="200") == 2


def test_first_byte_budget_cancels_the_local_attempt(
        make_llama: MakeLlama, front: Callable[..., Front]) -> None:
    # One slot, a large context and a long prompt: the local worker reads the prompt for
    # seconds before its first token, then would generate for minutes.
    local = make_llama(seed=0, slots=1, ctx=32768)
    hub = front([{"name": "w0", "url": local.url}],
                {"tenants": {"acme": True}, "first_byte_ms": {"interactive": 300}})
    long_prompt: list[Any] = [{"role": "user", "content": "hello " * 8000}]
    first: list[Any] = []
    close = threading.Event()

    def read_first_event() -> None:
        with hub.client("acme").chat.completions.with_streaming_response.create(
                model="tiny", messages=long_prompt, max_tokens=30000, stream=True) as resp:
            first.append((resp.headers["x-spokehub-tier"], next(iter(resp.parse()))))
            close.wait(DEADLINE_S * 2)  # then leave: the stream is closed mid-way

    thread = threading.Thread(target=read_first_event, daemon=True)
    thread.start()
    try:
        wait_for(lambda: first, DEADLINE_S * 2, "the first event of the answer")
        tier, chunk = first[0]
        assert tier == "fallback"
        assert chunk.model == "tiny-remote"
        # The local attempt was cancelled: its connection closed, and llama.cpp freed
        # the slot, minutes before 30000 tokens could have been generated.
        wait_for(lambda: _busy_slots(local) == 0, DEADLINE_S, "the local slot freed")
        assert hub.workers()["w0"]["in_flight"] == 0
    finally:
        close.set()
        thread.join(DEADLINE_S)
    assert hub.spills("first_byte_budget") == 1
    line = wait_for(lambda: next((line for line in request_lines(hub.hub)
                                  if line["tier"] == "fallback"), None),
                    DEADLINE_S, "the spilled request's log line")
    assert (line["worker"], line["attempts"]) == ("cloud", 2)  # w0 first, then the cloud
    # Slow is not broken: the local worker is not charged for it and still serves
    # (globex may not spill, so no budget races its answer).
    assert hub.workers()["w0"]["breaker"]["window_failures"] == 0
    status, headers, _ = hub.chat("globex", max_tokens=2)
    assert (status, headers["x-spokehub-tier"]) == (200, "local")


def test_queue_budget_spills_when_the_only_local_worker_is_full(
        make_fault: MakeFault, front: Callable[..., Front]) -> None:
    local = make_fault("tiny", mode="gate")  # holds every request until the gate opens
    hub = front([{"name": "w0", "url": local.url, "max_concurrency": 1}],
                {"tenants": {"acme": True}, "max_queue_ms": {"interactive": 300}})
    # globex may not spill: its request takes the local worker's only slot and waits.
    thread, out = _in_thread(lambda: hub.chat("globex", max_tokens=2))
    wait_for(lambda: local.stats()["active"] == 1, DEADLINE_S, "the local worker is full")

    status, headers, body = hub.chat("acme", max_tokens=2)
    assert status == 200, body
    assert headers["x-spokehub-tier"] == "fallback"
    assert hub.spills("queue_budget") == 1
    assert local.stats()["requests"] == 1  # the spilled request never reached it

    local.control(gate="open")
    thread.join(DEADLINE_S)
    assert out and out[0][0] == 200
    assert out[0][1]["x-spokehub-tier"] == "local"


def test_stream_spills_on_first_byte_budget(
        make_fault: MakeFault, front: Callable[..., Front]) -> None:
    """A stream that has sent no event by the budget goes to the fallback whole."""
    local = make_fault("tiny", mode="hang")
    hub = front([{"name": "w0", "url": local.url}],
                {"tenants": {"acme": True}, "first_byte_ms": {"default": 500}})
    with hub.client("acme").chat.completions.with_streaming_response.create(
            model="tiny", messages=MESSAGES, max_tokens=3, stream=True) as resp:
        assert resp.headers["x-spokehub-tier"] == "fallback"
        chunks = list(resp.parse())
    assert chunks and chunks[-1].choices[0].finish_reason is not None
    assert {c.model for c in chunks} == {"tiny-remote"}
    assert hub.spills("first_byte_budget") == 1
    wait_for(lambda: hub.workers()["w0"]["in_flight"] == 0, DEADLINE_S, "w0 released")


def _usage(hub: Front) -> dict[str, Any]:
    req = urllib.request.Request(f"{hub.hub.url}/admin/usage?group_by=tenant,tier", headers={
        "Authorization": f"Bearer {hub.token('ops', 'admin')}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc: dict[str, Any] = json.load(resp)
    return doc


def test_hard_budget_stops_spill_over_and_the_ledger_prices_the_fallback_tier(
        make_llama: MakeLlama, front: Callable[..., Front]) -> None:
    local = make_llama(seed=0)
    hub = front([{"name": "w0", "url": local.url}],
                {"tenants": {"acme": True, "globex": True}},
                prices={"tiny": {"input_per_1m": 0, "output_per_1m": 0,
                                 "fallback": {"input_per_1m": 1000, "output_per_1m": 2000}}},
                budgets={"tenants": {"acme": {"daily_cost": 0.001, "on_hard": "no_spill"}}})
    local.kill()
    wait_for(lambda: not hub.workers()["w0"]["healthy"], DEADLINE_S, "w0 marked down")

    # Within budget, acme spills; the answer's usage is priced at the fallback's rate,
    # which is far above acme's daily budget: acme is now past its hard limit.
    status, headers, body = hub.chat("acme", max_tokens=4)
    assert status == 200, body
    assert headers["x-spokehub-tier"] == "fallback"
    usage = json.loads(body)["usage"]
    cost = (usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1e6
    assert cost > 0.001

    def acme_fallback() -> dict[str, Any] | None:
        rows = [r for r in _usage(hub)["rows"] if r["tenant"] == "acme"]
        return rows[0] if rows else None

    wait_for(lambda: acme_fallback() is not None, DEADLINE_S, "acme's row in the ledger")
    row = acme_fallback()
    assert row is not None
    assert row["tier"] == "fallback"
    assert row["prompt_tokens"] == usage["prompt_tokens"]
    assert row["completion_tokens"] == usage["completion_tokens"]
    assert row["cost"] == pytest.approx(cost)
    standing = {b["tenant"]: b for b in _usage(hub)["budgets"]}
    assert standing["acme"]["state"] == "hard"

    # Past the hard limit with on_hard: no_spill, acme may not spill: with every local
    # worker down that is the fleet's 503; globex, with no budget, still spills.
    status, _, body = hub.chat("acme", max_tokens=4)
    assert status == 503, body
    assert json.loads(body)["error"]["code"] == "no_healthy_worker"
    status, headers, body = hub.chat("globex", max_tokens=4)
    assert status == 200, body
    assert headers["x-spokehub-tier"] == "fallback"
    assert hub.spills("no_local") == 2
