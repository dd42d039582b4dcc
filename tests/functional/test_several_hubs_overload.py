"""Two real hub processes sharing one real redis-server (``state.backend: redis``), with a
real llama.cpp worker and JWT tenants: the response cache and the token budgets hold
across the hubs.

- a deterministic answer cached through hub A is a hit at hub B, byte for byte, after
  the only worker has stopped; another tenant asking the same at B gets no answer;
- a tenant's hard budget (``on_hard: reject``) spent through hub A is enforced at hub B,
  although B alone served it less than the budget;
- with Redis down both hubs still serve (shared lookups skipped, local budgets).
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.conftest import workers_config
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.observe import Scrape, post, scrape, wait_for
from tests.support.redis_proc import RedisServer

MakeHub = Callable[..., HubProcess]
DEADLINE_S = 60.0
JWT_ENV = "SPOKEHUB_TEST_FLEET_JWT"
PEPPER_ENV = "SPOKEHUB_CACHE_PEPPER"
CHAT: dict[str, Any] = {"model": "tiny", "max_tokens": 4, "temperature": 0,
                        "messages": [{"role": "user", "content": "Name three load balancers."}]}
AUTH = {"enabled": True, "keys": [{"kid": "t", "alg": "HS256", "secret_env": JWT_ENV}]}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


class Fleet:
    """Hubs A and B: one config, one Redis, one pepper, one JWT secret."""

    def __init__(self, make_hub: MakeHub, redis: RedisServer, worker: LlamaWorker,
                 **config: Any) -> None:
        self.namespace = f"fleet{redis.port}"
        self.env = {JWT_ENV: secrets.token_hex(32), PEPPER_ENV: secrets.token_hex(32),
                    "SPOKEHUB_REDIS_URL": redis.url}
        cfg = workers_config(worker, auth=AUTH, response_cache={"enabled": True},
                             state={"backend": "redis", "namespace": self.namespace},
                             **config)
        self.a, self.b = make_hub(cfg, env=self.env), make_hub(cfg, env=self.env)
        self.auth = parse_auth(AUTH)
        for h in (self.a, self.b):
            wait_for(lambda h=h: scrape(h).get("spokehub_state_backend_up") == 1.0,  # type: ignore[misc]
                     DEADLINE_S, "the hub's link to Redis")

    def headers(self, tenant: str) -> dict[str, str]:
        token = issue_token(self.auth, tenant=tenant, scopes=["infer"], ttl_s=600,
                            environ=self.env)
        return {"Authorization": f"Bearer {token}"}

    def post(self, hub: HubProcess, tenant: str,
             body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
        return post(f"{hub.base_url}/chat/completions", body or CHAT, self.headers(tenant))

    def admin(self, hub: HubProcess, path: str) -> Any:
        token = issue_token(self.auth, tenant="ops", scopes=["admin"], ttl_s=600,
                            environ=self.env)
        req = urllib.request.Request(f"{hub.url}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)


def healthy(fleet: Fleet, hub: HubProcess) -> bool:
    workers = fleet.admin(hub, "/admin/workers")["workers"]
    return bool(workers[0]["healthy"])


def shared_lookups(s: Scrape, result: str) -> float:
    return s.get("spokehub_response_cache_shared_lookups_total", result=result)


def test_an_answer_cached_through_one_hub_is_a_hit_at_the_other(
        make_llama: Callable[..., LlamaWorker], make_hub: MakeHub,
        redis: RedisServer) -> None:
    worker = make_llama()
    fleet = Fleet(make_hub, redis, worker)
    status, headers, first = fleet.post(fleet.a, "acme")
    assert status == 200, first
    assert headers["x-spokehub-cache"] == "miss" and headers["x-spokehub-worker"] == "w0"
    client = redis_sync.Redis.from_url(redis.url)
    try:
        wait_for(lambda: client.keys(f"{fleet.namespace}:rc:*"), DEADLINE_S,
                 "the answer written to Redis")
    finally:
        client.close()
    worker.stop()  # from here on only a cache can answer
    for h in (fleet.a, fleet.b):
        wait_for(lambda h=h: not healthy(fleet, h), DEADLINE_S, "w0 seen down")  # type: ignore[misc]
    status, headers, hit = fleet.post(fleet.b, "acme", {**CHAT, "user": "someone-else"})
    assert status == 200, hit
    assert hit == first  # the same bytes, id and all: hub A's worker's answer
    assert headers["x-spokehub-cache"] == "hit"
    assert "x-spokehub-worker" not in headers
    assert shared_lookups(scrape(fleet.b), "hit") == 1.0
    status, headers, again = fleet.post(fleet.b, "acme")  # now in B's own LRU
    assert (status, again) == (200, first)
    assert shared_lookups(scrape(fleet.b), "hit") == 1.0
    status, _, _ = fleet.post(fleet.b, "globex")  # the same request, another tenant
    assert status == 503, "tenant B must not be answered from tenant A's entry"
    assert shared_lookups(scrape(fleet.b), "miss") >= 1.0


def test_a_budget_spent_through_one_hub_is_enforced_at_the_other(
        make_llama: Callable[..., LlamaWorker], make_hub: MakeHub,
        redis: RedisServer) -> None:
    worker = make_llama()
    limit = 40
    fleet = Fleet(make_hub, redis, worker, budgets={"tenants": {
        "capped": {"daily_tokens": limit, "on_hard": "reject"}}})
    spent_at_a = 0
    n = 0
    while True:  # distinct prompts: every request reaches the worker
        body = {**CHAT, "messages": [{"role": "user", "content": f"Count to {n}."}]}
        n += 1
        status, _, raw = fleet.post(fleet.a, "capped", body)
        if status == 429:
            break
        assert status == 200, raw
        spent_at_a += json.loads(raw)["usage"]["total_tokens"]
        assert n < 50, "hub A never refused the capped tenant"
    assert spent_at_a >= limit

    def state_at_b() -> dict[str, Any] | None:
        (capped,) = fleet.admin(fleet.b, "/admin/usage?tenant=capped")["budgets"]
        return capped if capped["state"] == "hard" else None

    # B has served the capped tenant nothing: only A's usage can make it "hard" there
    capped = wait_for(state_at_b, DEADLINE_S, "hub B sees the fleet's usage")
    assert capped["daily"]["tokens"] >= spent_at_a
    body = {**CHAT, "temperature": 0.7}  # not cacheable: it would reach the worker
    status, headers, raw = fleet.post(fleet.b, "capped", body)
    assert status == 429, raw
    assert json.loads(raw)["error"]["code"] == "insufficient_quota"
    assert int(headers["retry-after"]) >= 1
    status, _, raw = fleet.post(fleet.b, "free", body)  # other tenants are served
    assert status == 200, raw
    usage = fleet.admin(fleet.b, "/admin/usage?tenant=capped")
    assert usage["total"]["requests"] == 0  # the rows are what B served: nothing
    assert scrape(fleet.b).get("spokehub_shared_budget_syncs_total") > 0


def test_with_redis_down_both_hubs_still_serve(
        make_llama: Callable[..., LlamaWorker], make_hub: MakeHub,
        redis: RedisServer) -> None:
    worker = make_llama()
    fleet = Fleet(make_hub, redis, worker, budgets={"tenants": {
        "capped": {"daily_tokens": 1_000_000, "on_hard": "reject"}}})
    redis.kill()
    for h in (fleet.a, fleet.b):
        wait_for(lambda h=h: scrape(h).get("spokehub_state_backend_up") == 0.0,  # type: ignore[misc]
                 DEADLINE_S, "the hub sees Redis down")
    for h in (fleet.a, fleet.b):
        status, headers, first = fleet.post(h, "capped")
        assert status == 200, first
        assert headers["x-spokehub-cache"] == "miss"
        status, headers, again = fleet.post(h, "capped")  # the local level still works
        assert (status, headers["x-spokehub-cache"], again) == (200, "hit", first)
        s = scrape(h)
        assert shared_lookups(s, "skipped") >= 1.0
        assert shared_lookups(s, "hit") == 0.0
