#!/usr/bin/env python3
"""What sharing the response cache and the budgets through Redis adds to a request.

A real redis-server on a free loopback port and the hub's own code paths
(``ResponseCache.plan`` + ``look_further``, ``Ledger.check``), timed per request:

* cache: a local miss with no shared level (one hub), a local miss that also misses in
  Redis (the added round trip every cacheable miss pays before going to a worker), a
  local miss that hits in Redis (instead of a generation), and a local hit;
* budgets: ``Ledger.check`` of a budgeted tenant with this hub's totals only and with the
  fleet's (a dict lookup either way: no Redis on the request path), and one sync round
  (send this hub's usage, read the fleet's totals) for ``--tenants`` budgeted tenants.

Redis and the bench share the machine's cores, as a hub and a local Redis would; over a
network add its round trip to the Redis rows.

Usage: python -m bench.shared_cache [--requests 3000] [--tenants 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from hub.cache.cache import ResponseCache
from hub.cache.config import ResponseCacheConfig
from hub.forward.call import Call
from hub.ledger.budgets import parse_budgets
from hub.ledger.config import LedgerConfig
from hub.ledger.ledger import Ledger
from hub.ledger.prices import parse_prices
from hub.observe.usage import Usage
from hub.state.shared_budgets import SharedBudgets
from hub.state.shared_cache import SharedCache
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

ANSWER = json.dumps({"id": "c1", "object": "chat.completion", "model": "tiny", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "x" * 600},
     "finish_reason": "stop"}]}).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def body(i: int) -> dict[str, Any]:
    return {"model": "tiny", "temperature": 0,
            "messages": [{"role": "user", "content": f"question {i} " * 20}]}


def call() -> Call:
    return Call(request_id="r", route="/chat/completions", model="tiny", tenant="acme")


async def timed(n: int, one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    out = []
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        await one(i)
        out.append(clock() - t0)
    return {"median_us": percentile(out, 50) * 1e6, "p99_us": percentile(out, 99) * 1e6}


async def run(n: int, tenants: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        link = LinkForTests(server.url, "bench", "bench")
        try:
            await link.start()
            return await _run(link, n, tenants)
        finally:
            await link.aclose()
            server.kill()


async def _run(link: LinkForTests, n: int, tenants: int) -> dict[str, Any]:
    cfg = ResponseCacheConfig(enabled=True, max_bytes=1 << 30)
    alone = ResponseCache(cfg, b"p" * 32)
    shared = ResponseCache(cfg, b"p" * 32)
    level = SharedCache(link, timeout_s=lambda: 1.0)
    shared.remote = level
    out: dict[str, Any] = {}

    async def miss_alone(i: int) -> None:
        c = call()
        plan = alone.plan(c, body(i), {})
        assert plan is not None and plan.entry is None

    async def miss_both(i: int) -> None:
        c = call()
        plan = await shared.look_further(shared.plan(c, body(n + i), {}) or _no(), c)
        assert plan.entry is None

    out["local miss, no shared level"] = await timed(n, miss_alone)
    out["local miss + Redis miss"] = await timed(n, miss_both)
    # fill Redis from "another hub", then look up from an empty local cache
    other = ResponseCache(cfg, b"p" * 32)
    other.remote = SharedCache(link)
    assert isinstance(other.remote, SharedCache)
    for i in range(n):
        c = call()
        plan = other.plan(c, body(2 * n + i), {}) or _no()
        c.answered = True
        other.fill(plan, c, web.Response(body=ANSWER, content_type="application/json"))
        if i % 500 == 499:  # fills arrive over time, not all in one tick
            await other.remote.drain()
    await other.remote.drain()
    assert other.remote.stores["stored"] == n, other.remote.stores

    async def redis_hit(i: int) -> None:
        c = call()
        plan = await shared.look_further(shared.plan(c, body(2 * n + i), {}) or _no(), c)
        assert plan.entry is not None

    async def local_hit(i: int) -> None:
        c = call()
        plan = shared.plan(c, body(2 * n + i), {}) or _no()
        assert plan.entry is not None

    out["local miss + Redis hit (stored locally)"] = await timed(n, redis_hit)
    out["local hit"] = await timed(n, local_hit)
    assert level.lookups["hit"] == n and level.lookups["miss"] == n
    out["budgets"] = await budgets(link, n, tenants)
    return out


async def budgets(link: LinkForTests, n: int, tenants: int) -> dict[str, Any]:
    prices = parse_prices({"tiny": {"input_per_1m": 1.0, "output_per_1m": 2.0}})
    cfg = parse_budgets({"tenants": {f"t{i}": {"daily_tokens": 10**12, "on_hard": "reject"}
                                     for i in range(tenants)}})
    out: dict[str, Any] = {}
    for name, fleet in (("check, this hub's totals", False), ("check, fleet totals", True)):
        ledger = Ledger(prices, LedgerConfig(), cfg, env={})
        await ledger.start()
        share = SharedBudgets(link, ledger, every_s=lambda: 3600.0)
        if fleet:
            ledger.fleet = share
        try:
            for i in range(tenants):
                c = Call(request_id="r", route="/chat/completions", model="tiny",
                         tenant=f"t{i}", answered=True, worker="w0")
                c.usage = Usage(10, 5)
                ledger.record(c)
            if fleet:
                await share.sync()

            async def check(i: int, ledger: Ledger = ledger) -> None:
                ledger.fleet_changed()  # judge afresh every time: the worst case
                ledger.check(f"t{i % tenants}")

            out[name] = await timed(n, check)
            if fleet:
                rounds = []
                for _ in range(50):
                    for i in range(tenants):
                        share.add(f"t{i}", 15, 1e-5, ledger.totals.windows)
                    t0 = time.perf_counter()
                    await share.sync()
                    rounds.append(time.perf_counter() - t0)
                out[f"sync round, {tenants} tenants"] = {
                    "median_us": percentile(rounds, 50) * 1e6,
                    "p99_us": percentile(rounds, 99) * 1e6}
        finally:
            await ledger.stop()
    return out


def _no() -> Any:
    raise AssertionError("the route is cached")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(run(args.requests, args.tenants))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows = {**{k: v for k, v in result.items() if k != "budgets"}, **result["budgets"]}
    for name, r in rows.items():
        print(f"{name:42s} median {r['median_us']:8.1f} us   p99 {r['p99_us']:8.1f} us")


if __name__ == "__main__":
    main()
