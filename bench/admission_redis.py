#!/usr/bin/env python3
"""What the shared rate limits add to a request: ``Admission.admit`` with the tenant's
buckets in memory (one hub) and in Redis (several hubs, ``state.backend: redis``).

A real redis-server on a free loopback port; one tenant with a request and a
completion-token limit high enough never to wait, so each admission is one script
call (both buckets). Sequential requests give the added latency of one admission;
``--concurrency`` requests at once show it under load, with admissions that arrive
while one is on the wire pipelined together (the default) and each on its own round
trip (``max_batch=1``), side by side. Redis and the bench share the machine's cores, as a hub and
a local Redis would.

Usage: python -m bench.admission_redis [--requests 5000] [--concurrency 32] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

from hub.admission.limiter import Admission, AdmissionConfig, TenantLimits
from hub.state.buckets import SharedBuckets
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

LIMITS = TenantLimits(requests_per_s=1e9, burst=1e9, tokens_per_min=1e12, queue_timeout_s=0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def measure(adm: Admission, n: int, concurrency: int) -> tuple[list[float], float]:
    """Each admission's latency, and admissions per second over the run."""
    out: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    clock = time.perf_counter

    async def one(i: int) -> None:
        async with sem:
            t0 = clock()
            await adm.admit(f"tenant-{i % 8}", 256)
            out.append(clock() - t0)

    start = clock()
    if concurrency == 1:
        for i in range(n):
            t0 = clock()
            await adm.admit(f"tenant-{i % 8}", 256)
            out.append(clock() - t0)
    else:
        await asyncio.gather(*(one(i) for i in range(n)))
    return out, n / (clock() - start)


def summary(name: str, run: tuple[list[float], float]) -> dict[str, Any]:
    samples, rate = run
    return {"run": name, "n": len(samples),
            "p50_us": round(percentile(samples, 50) * 1e6, 1),
            "p99_us": round(percentile(samples, 99) * 1e6, 1),
            "per_s": round(rate)}


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = AdmissionConfig(default=LIMITS)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        link = LinkForTests(server.url, "bench", "bench")
        try:
            await link.start()
            memory = Admission(cfg)
            shared = Admission(cfg, remote=SharedBuckets(link))
            await measure(memory, 200, 1)  # warm up
            await measure(shared, 200, 1)
            rows.append(summary("memory, sequential", await measure(memory, args.requests, 1)))
            rows.append(summary("redis, sequential", await measure(shared, args.requests, 1)))
            rows.append(summary(f"memory, {args.concurrency} at once",
                                await measure(memory, args.requests, args.concurrency)))
            rows.append(summary(f"redis, {args.concurrency} at once",
                                await measure(shared, args.requests, args.concurrency)))
            single = Admission(cfg, remote=SharedBuckets(link, max_batch=1))
            rows.append(summary(f"redis, {args.concurrency} at once, no pipelining",
                                await measure(single, args.requests, args.concurrency)))
            ping = Redis.from_url(server.url)
            rtt: list[float] = []
            start = time.perf_counter()
            for _ in range(args.requests):
                t0 = time.perf_counter()
                await ping.ping()
                rtt.append(time.perf_counter() - t0)
            rate = len(rtt) / (time.perf_counter() - start)
            await ping.aclose()
            rows.append(summary("redis PING (round trip)", (rtt, rate)))
            assert isinstance(shared.remote, SharedBuckets) and not shared.remote.fallbacks
        finally:
            await link.aclose()
            server.kill()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as the hub runs
        result = runner.run(main(opts))
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'run':40} {'n':>6} {'p50 us':>9} {'p99 us':>9} {'per s':>8}")
        for row in result:
            print(f"{row['run']:40} {row['n']:6} {row['p50_us']:9} {row['p99_us']:9} "
                  f"{row['per_s']:8}")
