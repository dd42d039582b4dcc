"""The response cache's shared level on a real redis-server: an answer one hub filled is
a hit at another, tenants stay apart, TTL and size bounds hold, and an outage or a slow
Redis is a miss, never an error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from hub.cache.cache import ResponseCache
from hub.cache.config import ResponseCacheConfig
from hub.config.schema import parse_config
from hub.forward.call import Call
from hub.runtime.hub import Hub
from hub.state.attach_usage import attach_shared_usage
from hub.state.shared_cache import SharedCache
from tests.state.limits_support import redis_server, two_links
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

__all__ = ["redis_server", "two_links"]  # fixtures

PEPPER = b"p" * 32
ANSWER = json.dumps({"id": "c1", "object": "chat.completion", "model": "tiny", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"},
     "finish_reason": "stop"}]}).encode()
BODY: dict[str, Any] = {"model": "tiny", "temperature": 0,
                        "messages": [{"role": "user", "content": "x"}]}


# Keeps the (single-threaded) server busy for 0.4 s: every other client waits.
SPIN = """
local t = redis.call('TIME')
local stop = tonumber(t[1]) + tonumber(t[2]) / 1000000 + 0.4
repeat
  t = redis.call('TIME')
until tonumber(t[1]) + tonumber(t[2]) / 1000000 >= stop
return 1
"""


def hub_cache(link: LinkForTests, pepper: bytes = PEPPER, **cfg: Any) -> ResponseCache:
    rc = ResponseCache(ResponseCacheConfig(enabled=True, **cfg), pepper)
    rc.remote = SharedCache(link, timeout_s=lambda: 1.0,
                            max_entry_bytes=lambda: rc.store.max_entry_bytes)
    return rc


def shared(rc: ResponseCache) -> SharedCache:
    assert isinstance(rc.remote, SharedCache)
    return rc.remote


def call(tenant: str = "acme") -> Call:
    return Call(request_id="r", route="/chat/completions", model="tiny", tenant=tenant)


async def fill(rc: ResponseCache, tenant: str = "acme", body: bytes = ANSWER) -> None:
    c = call(tenant)
    plan = await rc.look_further(rc.plan(c, BODY, {}) or _no(), c)
    assert plan.entry is None and c.cache == "miss"
    c.answered = True
    rc.fill(plan, c, web.Response(status=200, body=body, content_type="application/json"))
    await shared(rc).drain()


def _no() -> Any:
    raise AssertionError("the route is cached")


async def lookup(rc: ResponseCache, tenant: str = "acme") -> tuple[Call, bytes | None]:
    c = call(tenant)
    plan = rc.plan(c, BODY, {})
    assert plan is not None
    plan = await rc.look_further(plan, c)
    return c, None if plan.entry is None else plan.entry.body


async def test_a_fill_at_one_hub_is_a_hit_at_another(
        two_links: tuple[LinkForTests, LinkForTests]) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    a, b = hub_cache(link_a), hub_cache(link_b)
    await fill(a)
    c, body = await lookup(b)
    assert body == ANSWER and c.cache == "hit"
    assert shared(b).lookups["hit"] == 1
    # stored locally at b too: the next lookup never asks Redis
    c, body = await lookup(b)
    assert body == ANSWER and b.store.hits == 1 and shared(b).lookups["hit"] == 1
    # what Redis holds: a namespaced hex HMAC with a TTL, no tenant or prompt in sight
    keys = await link_a.client.keys(link_a.key("rc", "*"))
    assert len(keys) == 1 and b"acme" not in keys[0]
    assert 0 < await link_a.client.pttl(keys[0]) <= 300_000
    value = await link_a.client.get(keys[0])
    assert value == b"application/json\n" + ANSWER


async def test_tenants_never_share_an_entry_across_hubs(
        two_links: tuple[LinkForTests, LinkForTests]) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    a, b = hub_cache(link_a), hub_cache(link_b)
    await fill(a, "acme")
    c, body = await lookup(b, "globex")
    assert body is None and c.cache == "miss"
    assert shared(b).lookups["miss"] == 1
    # a hub with another pepper finds nothing either
    c, body = await lookup(hub_cache(link_b, b"q" * 32), "acme")
    assert body is None


async def test_the_ttl_carries_over_and_large_answers_stay_local(
        two_links: tuple[LinkForTests, LinkForTests]) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    a = hub_cache(link_a, ttl_s=1000.0)
    await fill(a)
    key = (await link_a.client.keys(link_a.key("rc", "*")))[0]
    await link_a.client.pexpire(key, 5000)  # as if stored 995 s ago
    b = hub_cache(link_b, ttl_s=1000.0)
    _, body = await lookup(b)
    assert body == ANSWER
    (entry,) = b.store._entries.values()
    assert entry.expires - b.store.clock() <= 5.0  # served locally for what was left
    # an answer over max_entry_bytes is neither stored locally nor shared
    small = hub_cache(link_a, max_entry_bytes=len(ANSWER) - 1, max_bytes=4096)
    await link_a.client.delete(key)
    await fill(small)
    assert await link_a.client.keys(link_a.key("rc", "*")) == []


async def test_an_outage_is_a_miss_and_the_answer_still_fills_locally(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    link = LinkForTests(server.url, "hub-a", "rc-outage")
    try:
        await link.start()
        rc = hub_cache(link)
        server.kill()
        c, body = await lookup(rc)  # the command fails: a miss, the link marked down
        assert body is None and c.cache == "miss" and not link.up
        assert shared(rc).lookups["error"] == 1
        c, body = await lookup(rc)
        assert body is None and shared(rc).lookups["skipped"] == 1
        await fill(rc)
        assert shared(rc).stores["skipped"] == 1
        c, body = await lookup(rc)
        assert body == ANSWER  # the local level serves on
        server.start()
        for _ in range(600):
            if link.up:
                break
            await asyncio.sleep(0.05)
        assert link.up
        await fill(hub_cache(link), "globex")
        assert shared(rc).stores["skipped"] == 1
        assert len(await link.client.keys(link.key("rc", "*"))) == 1
    finally:
        await link.aclose()
        server.kill()


async def test_a_slow_redis_is_a_miss_within_the_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    link = LinkForTests(server.url, "hub-a", "rc-slow")
    blocker = LinkForTests(server.url, "blocker", "rc-slow")
    try:
        await link.start()
        await blocker.start()
        rc = hub_cache(link)
        shared(rc).timeout_s = lambda: 0.05
        await fill(rc)
        rc.store.clear()
        busy = asyncio.ensure_future(blocker.client.eval(SPIN, 0))
        await asyncio.sleep(0.1)  # the server is asleep now
        c, body = await lookup(rc)
        assert body is None and c.cache == "miss"
        assert shared(rc).lookups["error"] == 1
        assert link.up  # slow is not down
        await busy
        # the connection of the lookup that timed out is not reused: the next lookups
        # get their own answers, not the late one
        shared(rc).timeout_s = lambda: 1.0
        _, body = await lookup(rc, "globex")
        assert body is None
        _, body = await lookup(rc, "acme")
        assert body == ANSWER
    finally:
        await link.aclose()
        await blocker.aclose()
        server.kill()


async def test_attach_survives_a_reload_that_rebuilds_the_cache(
        two_links: tuple[LinkForTests, LinkForTests], monkeypatch: Any) -> None:
    link, _ = two_links
    monkeypatch.setenv("SPOKEHUB_CACHE_PEPPER", "a" * 20)
    raw = {"workers": [{"name": "w0", "url": "http://127.0.0.1:9"}],
           "response_cache": {"enabled": True}}
    hub = Hub(parse_config(raw))
    usage = attach_shared_usage(hub, link)
    await link.start()
    try:
        assert hub.cache is not None and hub.cache.remote is usage.cache
        assert hub.ledger.fleet is usage.budgets
        monkeypatch.setenv("SPOKEHUB_CACHE_PEPPER", "b" * 20)  # a new pepper: a new cache
        old = hub.cache
        hub.apply(parse_config(raw))
        assert hub.cache is not old and hub.cache is not None
        assert hub.cache.remote is usage.cache
        hub.apply(parse_config({**raw, "response_cache": {"enabled": False}}))
        assert hub.cache is None
        hub.apply(parse_config(raw))
        assert hub.cache is not None and hub.cache.remote is usage.cache
        text = generate_latest(hub.metrics.prom).decode()
        assert 'spokehub_response_cache_shared_lookups_total{result="hit"} 0.0' in text
        assert "spokehub_shared_budget_syncs_total" in text
    finally:
        await usage.aclose()
    assert hub.cache.remote is None and hub.ledger.fleet is None
    assert "spokehub_response_cache_shared" not in generate_latest(hub.metrics.prom).decode()
