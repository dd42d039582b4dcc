"""The request path's side of the cache: plan (decide, key, look up) and fill, on the
real aiohttp response objects the proxy returns."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from hub.cache.cache import ResponseCache
from hub.cache.config import ResponseCacheConfig, parse_response_cache
from hub.config.kit import ConfigError
from hub.forward.call import Call

ANSWER = json.dumps({"id": "c1", "object": "chat.completion", "model": "tiny", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"},
     "finish_reason": "stop"}]}).encode()
BODY: dict[str, Any] = {"model": "tiny", "temperature": 0,
                        "messages": [{"role": "user", "content": "x"}]}


def cache() -> ResponseCache:
    return ResponseCache(ResponseCacheConfig(enabled=True), b"k" * 32)


def call(tenant: str = "acme", route: str = "/chat/completions") -> Call:
    c = Call(request_id="r", route=route, model="tiny", tenant=tenant)
    return c


def answered(c: Call, body: bytes = ANSWER, status: int = 200) -> web.Response:
    c.answered = status == 200
    return web.Response(status=status, body=body, content_type="application/json")


def test_miss_fill_hit_and_other_tenant_misses() -> None:
    rc = cache()
    first = call()
    plan = rc.plan(first, BODY, {})
    assert plan is not None and plan.entry is None and first.cache == "miss"
    rc.fill(plan, first, answered(first))
    again = call()
    hit = rc.plan(again, {**BODY, "stream": True}, {})
    assert hit is not None and hit.entry is not None and again.cache == "hit"
    assert hit.entry.body == ANSWER
    other = call("globex")
    miss = rc.plan(other, BODY, {})
    assert miss is not None and miss.entry is None and other.cache == "miss"
    assert (rc.store.hits, rc.store.misses, rc.stored) == (1, 2, 1)


def test_not_filled_from_errors_streams_or_unreplayable_answers() -> None:
    rc = cache()
    for kind in ("400", "error", "not json", "stream"):
        c = call()
        plan = rc.plan(c, BODY, {})
        assert plan is not None
        response: web.StreamResponse
        if kind == "stream":
            c.answered = True
            response = web.StreamResponse(status=200)
        elif kind == "400":
            response = answered(c, status=400)
        else:
            response = answered(c, b'{"error":{"message":"x"}}' if kind == "error"
                                else b"not json")
        rc.fill(plan, c, response)
    assert rc.stored == 0 and len(rc.store) == 0


def test_bypasses() -> None:
    rc = cache()
    c = call()
    plan = rc.plan(c, {**BODY, "temperature": 1}, {})
    assert plan is not None and plan.key is None and c.cache == "bypass"
    c = call()
    plan = rc.plan(c, BODY, {"Cache-Control": "no-cache"})
    assert plan is not None and plan.key is not None and c.cache == "bypass"
    rc.fill(plan, c, answered(c))  # no-cache still stores the fresh answer
    assert rc.stored == 1
    c = call()
    plan = rc.plan(c, BODY, {"Cache-Control": "no-store"})
    assert plan is not None and plan.key is None and c.cache == "bypass"
    c = call(route="/responses")
    assert rc.plan(c, BODY, {}) is None and c.cache is None
    assert rc.bypasses == {"nondeterministic": 1, "no_cache": 1, "no_store": 1}


def test_build_reads_the_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_response_cache({"enabled": True, "pepper_env": "TEST_CACHE_PEPPER"})
    monkeypatch.delenv("TEST_CACHE_PEPPER", raising=False)
    with pytest.raises(ConfigError, match="TEST_CACHE_PEPPER is not set"):
        ResponseCache.build(cfg)
    monkeypatch.setenv("TEST_CACHE_PEPPER", "short")
    with pytest.raises(ConfigError, match="TEST_CACHE_PEPPER is shorter"):
        ResponseCache.build(cfg)
    monkeypatch.setenv("TEST_CACHE_PEPPER", "p" * 32)
    rc = ResponseCache.build(cfg)
    assert rc is not None and rc.pepper == b"p" * 32
    assert ResponseCache.build(parse_response_cache({"enabled": False}), rc) is None
    # a reload with the same pepper keeps the entries; a new pepper starts empty
    rc.store.put(b"k" * 32, ANSWER, "application/json")
    kept = ResponseCache.build(parse_response_cache({"enabled": True, "ttl_s": 10,
                                                     "pepper_env": "TEST_CACHE_PEPPER"}), rc)
    assert kept is rc and len(rc.store) == 1 and rc.store.ttl_s == 10
    monkeypatch.setenv("OTHER_PEPPER", "q" * 32)
    fresh = ResponseCache.build(parse_response_cache({"enabled": True,
                                                      "pepper_env": "OTHER_PEPPER"}), rc)
    assert fresh is not rc and fresh is not None and len(fresh.store) == 0


def test_config_errors_name_the_key() -> None:
    assert parse_response_cache(None) == ResponseCacheConfig()
    for raw, where in (({"routes": ["/messages"]}, "response_cache.routes[0]"),
                       ({"max_bytes": 10}, "response_cache.max_bytes"),
                       ({"max_entry_bytes": 1 << 30}, "response_cache.max_entry_bytes"),
                       ({"ttl_s": 0}, "response_cache.ttl_s"),
                       ({"default_temperature": -1}, "response_cache.default_temperature"),
                       ({"size": 1}, "response_cache.size")):
        with pytest.raises(ConfigError, match=where.replace("[", r"\[")):
            parse_response_cache(raw)
    cfg = parse_response_cache({"routes": ["/embeddings"], "default_temperature": 0})
    assert cfg.routes == ("/embeddings",) and cfg.default_temperature == 0.0
