"""The response cache on a real hub process, with real llama.cpp workers, JWT tenants and
the openai SDK.

Tenant isolation is shown the strong way: tenant A's answer is cached, the only worker
is stopped, and A still gets the same bytes while tenant B, asking the very same thing,
gets no answer at all (its request had to reach a worker). How much faster a hit is
than a miss is measured in bench/response_cache.py, not asserted here.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.conftest import workers_config
from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.observe import Scrape, post, request_lines, scrape, wait_for

MakeHub = Callable[..., HubProcess]
DEADLINE_S = 60.0
JWT_ENV = "SPOKEHUB_TEST_CACHE_JWT"
PEPPER_ENV = "SPOKEHUB_CACHE_PEPPER"
MESSAGES: list[Any] = [{"role": "user", "content": "Name three load balancers."}]
CHAT: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "max_tokens": 12,
                        "temperature": 0}


class Tenants:
    """A hub with auth and the cache on, and a token per tenant."""

    def __init__(self, make_hub: MakeHub, *workers: LlamaWorker, **cache: Any) -> None:
        self.env = {JWT_ENV: secrets.token_hex(32), PEPPER_ENV: secrets.token_hex(32)}
        auth = {"enabled": True, "keys": [{"kid": "t", "alg": "HS256", "secret_env": JWT_ENV}]}
        self.hub = make_hub(workers_config(*workers, auth=auth, response_cache={
            "enabled": True, **cache}), env=self.env)
        self.cfg = parse_auth(auth)

    def token(self, tenant: str) -> str:
        return issue_token(self.cfg, tenant=tenant, scopes=["infer"], ttl_s=600,
                           environ=self.env)

    def headers(self, tenant: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}", **extra}

    def post(self, tenant: str, body: dict[str, Any], route: str = "/chat/completions",
             **headers: str) -> tuple[int, dict[str, str], bytes]:
        return post(f"{self.hub.base_url}{route}", body, self.headers(tenant, **headers))

    def worker_healthy(self, name: str) -> bool:
        token = issue_token(self.cfg, tenant="ops", scopes=["admin"], ttl_s=600,
                            environ=self.env)
        req = urllib.request.Request(f"{self.hub.url}/admin/workers",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            workers = json.load(resp)["workers"]
        return bool(next(w for w in workers if w["name"] == name)["healthy"])

    def client(self, tenant: str) -> openai.OpenAI:
        return closing(openai.OpenAI(base_url=self.hub.base_url, api_key=self.token(tenant),
                                     max_retries=0, timeout=60))


def ok(answer: tuple[int, dict[str, str], bytes]) -> tuple[dict[str, str], bytes]:
    status, headers, raw = answer
    assert status == 200, raw
    return headers, raw


def counts(s: Scrape) -> dict[str, float]:
    p = "spokehub_response_cache_"
    return {"hits": s.get(p + "hits_total"), "misses": s.get(p + "misses_total"),
            "stores": s.get(p + "stores_total"), "entries": s.get(p + "entries"),
            "nondeterministic": s.get(p + "bypasses_total", reason="nondeterministic"),
            "no_cache": s.get(p + "bypasses_total", reason="no_cache"),
            "no_store": s.get(p + "bypasses_total", reason="no_store")}


def test_a_cached_answer_never_reaches_another_tenant(
        make_llama: Callable[..., LlamaWorker], make_hub: MakeHub) -> None:
    worker = make_llama()
    t = Tenants(make_hub, worker)
    first_headers, first = ok(t.post("acme", CHAT))
    assert first_headers["x-spokehub-cache"] == "miss"
    assert first_headers["x-spokehub-worker"] == "w0"
    worker.stop()  # from here on only the cache can answer
    wait_for(lambda: not t.worker_healthy("w0"), DEADLINE_S, "w0 seen down")
    hit_headers, hit = ok(t.post("acme", {**CHAT, "user": "someone-else"}))
    assert hit == first  # the same bytes, id and all
    assert hit_headers["x-spokehub-cache"] == "hit"
    assert "x-spokehub-worker" not in hit_headers
    status, _, _ = t.post("globex", CHAT)  # the same request, another tenant
    assert status == 503, "tenant B must not be answered from tenant A's entry"
    line = wait_for(lambda: [x for x in request_lines(t.hub)
                             if x["request_id"] == hit_headers["x-request-id"]],
                    DEADLINE_S, "the hit's log line")[0]
    assert (line["cache"], line["worker"], line["status"], line["tenant"]) == (
        "hit", None, 200, "acme")


def test_miss_then_hit_and_tenants_apart_with_the_sdk(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    t = Tenants(make_hub, llama_pair[0])
    before = counts(scrape(t.hub))
    acme, globex = t.client("acme"), t.client("globex")
    raw = acme.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["x-spokehub-cache"] == "miss"
    first, first_bytes = raw.parse(), raw.http_response.content
    raw = acme.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["x-spokehub-cache"] == "hit"
    assert raw.http_response.content == first_bytes  # the same body, byte for byte
    assert raw.parse() == first
    raw = globex.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["x-spokehub-cache"] == "miss"
    assert raw.headers["x-spokehub-worker"] == "w0"
    assert raw.parse().id != first.id  # its own answer from the worker
    assert raw.parse().choices[0].message.content == first.choices[0].message.content
    after = counts(scrape(t.hub))
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"hits": 1, "misses": 2, "stores": 2, "entries": 2,
                     "nondeterministic": 0, "no_cache": 0, "no_store": 0}
    assert scrape(t.hub).get("spokehub_response_cache_bytes") > 0


def test_streamed_request_replays_a_stored_answer(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    t = Tenants(make_hub, llama_pair[0])
    sdk = t.client("acme")
    whole = sdk.chat.completions.create(**CHAT)
    raw = sdk.chat.completions.with_raw_response.create(
        **CHAT, stream=True, stream_options={"include_usage": True})
    assert raw.headers["x-spokehub-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert all(c.object == "chat.completion.chunk" and c.id == whole.id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # /completions too, without usage
    text_whole = sdk.completions.create(model="tiny", prompt="Once upon", max_tokens=8,
                                        temperature=0)
    parts = list(sdk.completions.create(model="tiny", prompt="Once upon", max_tokens=8,
                                        temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == \
        text_whole.choices[0].text
    assert all(p.usage is None for p in parts)


def test_a_streamed_miss_is_stored_as_the_whole_answer(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    t = Tenants(make_hub, llama_pair[0])
    sdk = t.client("acme")
    raw = sdk.chat.completions.with_raw_response.create(**CHAT, stream=True)
    assert raw.headers["x-spokehub-cache"] == "miss"
    assert raw.headers["x-spokehub-worker"] == "w0"  # relayed from the worker
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next(c.choices[0].finish_reason for c in reversed(chunks)
                  if c.choices and c.choices[0].finish_reason)
    s = counts(scrape(t.hub))
    assert (s["stores"], s["entries"]) == (1, 1)
    raw = sdk.chat.completions.with_raw_response.create(**CHAT)  # non-stream: a hit
    assert raw.headers["x-spokehub-cache"] == "hit"
    whole = raw.parse()
    assert whole.id == chunks[0].id and whole.object == "chat.completion"
    assert whole.choices[0].message.content == text and text
    assert whole.choices[0].finish_reason == finish
    assert whole.usage is not None and whole.usage.completion_tokens > 0  # from timings
    again = list(sdk.chat.completions.create(**CHAT, stream=True))  # and a streamed hit
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == text
    s = counts(scrape(t.hub))
    assert (s["hits"], s["misses"], s["stores"]) == (2, 1, 1)


def test_cache_control_and_non_deterministic_requests_bypass(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    t = Tenants(make_hub, llama_pair[0])
    _, first = ok(t.post("acme", CHAT))
    # no-store: neither read nor written
    headers, raw = ok(t.post("acme", CHAT, **{"Cache-Control": "no-store"}))
    assert headers["x-spokehub-cache"] == "bypass" and headers["x-spokehub-worker"] == "w0"
    assert json.loads(raw)["id"] != json.loads(first)["id"]
    # no-cache: a fresh answer from the worker, which replaces the entry
    headers, fresh = ok(t.post("acme", CHAT, **{"Cache-Control": "no-cache"}))
    assert headers["x-spokehub-cache"] == "bypass" and headers["x-spokehub-worker"] == "w0"
    assert fresh != first
    headers, again = ok(t.post("acme", CHAT))
    assert headers["x-spokehub-cache"] == "hit" and again == fresh
    # never cached: sampling, several choices, tools
    for extra in ({"temperature": 0.7}, {"temperature": None}, {"n": 2},
                  {"tools": [{"type": "function", "function": {
                      "name": "f", "parameters": {"type": "object", "properties": {}}}}]}):
        body = {k: v for k, v in {**CHAT, **extra}.items() if v is not None}
        for _ in range(2):
            status, headers, raw = t.post("acme", body)
            if status == 200:  # the worker may refuse n > 1 or tools; it was asked
                assert headers["x-spokehub-cache"] == "bypass", extra
                assert headers["x-spokehub-worker"] == "w0", extra
    s = counts(scrape(t.hub))
    assert (s["no_store"], s["no_cache"], s["hits"], s["misses"], s["stores"],
            s["entries"]) == (1, 1, 1, 1, 2, 1)
    assert s["nondeterministic"] == 8


def test_embeddings_hit_and_other_routes_untouched(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    t = Tenants(make_hub, llama_pair[0], routes=["/embeddings"])
    body = {"model": "tiny", "input": "a cache for embeddings"}
    first_headers, first = ok(t.post("acme", body, "/embeddings"))
    headers, again = ok(t.post("acme", body, "/embeddings"))
    assert (first_headers["x-spokehub-cache"], headers["x-spokehub-cache"]) == ("miss", "hit")
    assert again == first
    headers, _ = ok(t.post("acme", CHAT))  # chat is not a cached route in this config
    assert "x-spokehub-cache" not in headers


@pytest.mark.parametrize("pepper", ["", "short"])
def test_enabled_without_a_pepper_does_not_start(
        make_hub: MakeHub, llama_pair: tuple[LlamaWorker, LlamaWorker], pepper: str) -> None:
    hub = make_hub(workers_config(llama_pair[0], response_cache={"enabled": True}),
                   env={PEPPER_ENV: pepper}, start=False)
    hub.write_config()
    hub.proc.start()
    code = wait_for(lambda: hub.proc.proc.poll() if hub.proc.proc else None, DEADLINE_S,
                    "the hub exits")
    assert code != 0
    assert "SPOKEHUB_CACHE_PEPPER" in hub.proc.log()
