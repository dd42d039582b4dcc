#!/usr/bin/env python3
"""Priority classes and token-weighted fairness in the worker queue, measured.

One fault worker (answers after ``--worker-delay`` s) behind a real hub that caps it at
``--max-concurrency``; JWT auth so tenants are token claims. Scenarios, each on a fresh
hub:

- ``flood``: ``--flood`` clients keep batch requests queued while an interactive
  client of the same tenant sends a request every 0.25 s: its latency; then the same
  flood sent as interactive (one class: FIFO within the tenant), and as interactive
  from another tenant (fair queuing between tenants).
- ``aging``: clients keep interactive requests queued all the time (3x the slots); a
  batch request every 2 s; its latency for two ``batch_aging_s`` values, against the
  stated bound computed from the measured time between answers.
- ``tokens``: two tenants of one class with the same number of clients, one sending
  ~4000-byte prompts and one ~400-byte ones; their shares of requests and of estimated
  tokens (the fair queue's cost), counted while both are backlogged.
- ``order``: the pure ordering code's cost per push + pop with 1000 waiters.

Usage: python -m bench.priority [--seconds 10] [--flood 12] [--worker-delay 0.1]
                                [--max-concurrency 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from hub.admission.fair_order import FairOrder
from hub.admission.priority import BATCH, CLASSES, INTERACTIVE, queue_cost
from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.procs import http_status

ENV = "SPOKEHUB_BENCH_PRIORITY_SECRET"
MODEL = "fault-model"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_s": round(percentile(values, 50), 3),
            "p95_s": round(percentile(values, 95), 3),
            "max_s": round(max(values), 3) if values else float("nan")}


class Bench:
    def __init__(self, tmp: Path, args: argparse.Namespace, **admission: Any) -> None:
        self.args = args
        self.worker = FaultWorker(tmp, MODEL, "ok", delay_s=args.worker_delay).start()
        secret = secrets.token_urlsafe(48)
        auth = {"enabled": True, "keys": [{"kid": "k", "alg": "HS256", "secret_env": ENV}]}
        self.auth = parse_auth(auth)
        self.secret = secret
        config = {"health": {"interval_s": 0.5, "timeout_s": 1}, "auth": auth,
                  "log_level": "warning",
                  "admission": {"worker_queue_max": 1000, "worker_queue_timeout_s": 120,
                                **admission},
                  "workers": [{"name": "w0", "url": self.worker.url, "kind": "llamacpp",
                               "max_concurrency": args.max_concurrency}]}
        self.hub = HubProcess(config, tmp, {ENV: secret}).start()
        deadline = time.monotonic() + 30
        while http_status(f"{self.hub.url}/readyz") != 200 and time.monotonic() < deadline:
            time.sleep(0.1)

    def token(self, tenant: str) -> str:
        return issue_token(self.auth, tenant=tenant, scopes=["infer"], ttl_s=3600,
                           priorities=list(CLASSES), environ={ENV: self.secret})

    def stop(self) -> None:
        self.hub.stop()
        self.worker.stop()


async def one(session: aiohttp.ClientSession, url: str, token: str, klass: str,
              prompt: str = "Say something short.") -> tuple[int, float]:
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]}
    t0 = time.monotonic()
    async with session.post(url, json=body, headers={
            "Authorization": f"Bearer {token}", "X-Spokehub-Priority": klass}) as resp:
        await resp.read()
        return resp.status, time.monotonic() - t0


async def flood_run(b: Bench, flood_class: str, flood_tenant: str) -> dict[str, Any]:
    url = f"{b.hub.url}/v1/chat/completions"
    stop = time.monotonic() + b.args.seconds
    lat: list[float] = []
    flood_done = 0
    tok_f, tok_i = b.token(flood_tenant), b.token("ui")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async def flooder() -> None:
            nonlocal flood_done
            while time.monotonic() < stop:
                await one(s, url, tok_f, flood_class)
                flood_done += 1

        async def interactive() -> None:
            await asyncio.sleep(1.0)  # let the flood fill the queue
            tasks = []
            while time.monotonic() < stop:
                tasks.append(asyncio.create_task(one(s, url, tok_i, INTERACTIVE)))
                await asyncio.sleep(0.25)
            for status, seconds in await asyncio.gather(*tasks):
                if status == 200:
                    lat.append(seconds)

        await asyncio.gather(interactive(), *(flooder() for _ in range(b.args.flood)))
    return {"flood_class": flood_class, "flood_tenant": flood_tenant,
            "interactive_latency": summary(lat),
            "flood_requests_served": flood_done}


async def aging_run(b: Bench, aging_s: float) -> dict[str, Any]:
    url = f"{b.hub.url}/v1/chat/completions"
    stop = time.monotonic() + b.args.seconds
    lat: list[float] = []
    served = Counter[str]()
    tok = b.token("acme")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async def stream() -> None:
            while time.monotonic() < stop:
                await one(s, url, tok, INTERACTIVE)
                served["interactive"] += 1

        async def batches() -> None:
            await asyncio.sleep(1.0)
            tasks = []
            while time.monotonic() < stop - aging_s - 1:
                tasks.append(asyncio.create_task(one(s, url, tok, BATCH)))
                await asyncio.sleep(2.0)
            for status, seconds in await asyncio.gather(*tasks):
                if status == 200:
                    lat.append(seconds)

        await asyncio.gather(batches(), *(stream() for _ in range(3 * b.args.max_concurrency)))
    # The bound on a batch request's latency: aging_s, then the interactive requests
    # queued ahead of it at promotion (clients less slots) plus one, each taking the
    # measured time between answers, then its own service time.
    gap = b.args.seconds / max(1, served["interactive"])
    ahead = 3 * b.args.max_concurrency - b.args.max_concurrency
    own = gap * b.args.max_concurrency
    return {"batch_aging_s": aging_s, "batch_latency": summary(lat),
            "interactive_served": served["interactive"],
            "bound_s": round(aging_s + (ahead + 1) * gap + own, 3)}


async def tokens_run(b: Bench) -> dict[str, Any]:
    url = f"{b.hub.url}/v1/chat/completions"
    stop = time.monotonic() + b.args.seconds
    prompts = {"long": "word " * 800, "short": "word " * 80}
    reqs: Counter[str] = Counter()
    toks: Counter[str] = Counter()
    window = stop - b.args.seconds + 1.0  # count answers from 1 s in until the stop: both
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async def client(tenant: str, token: str) -> None:  # tenants backlogged all along
            body_len = len(json.dumps({"model": MODEL, "max_tokens": 8, "messages": [
                {"role": "user", "content": prompts[tenant]}]}))
            while time.monotonic() < stop:
                status, _ = await one(s, url, token, BATCH, prompts[tenant])
                if status == 200 and window <= time.monotonic() <= stop:
                    reqs[tenant] += 1
                    toks[tenant] += queue_cost(body_len, 8)

        await asyncio.gather(*(client(t, b.token(t)) for t in ("long", "short")
                               for _ in range(2 * b.args.max_concurrency)))
    total = sum(toks.values()) or 1
    return {"requests": dict(reqs),
            "token_share": {t: round(v / total, 3) for t, v in toks.items()}}


def order_cost(n: int = 1000, rounds: int = 20000) -> dict[str, float]:
    order = FairOrder(10.0)
    now = 0.0
    for i in range(n):
        order.push(order.waiter(f"t{i % 50}", CLASSES[i % 3], 100 + i % 900, 1.0, now), now)
    t0 = time.perf_counter()
    for i in range(rounds):
        now += 0.001
        order.push(order.waiter(f"t{i % 50}", CLASSES[i % 3], 100 + i % 900, 1.0, now), now)
        order.pop(now)
    return {"waiters": n, "push_pop_us": round((time.perf_counter() - t0) / rounds * 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--flood", type=int, default=12)
    ap.add_argument("--worker-delay", type=float, default=0.1)
    ap.add_argument("--max-concurrency", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {"order": order_cost()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for key, admission, run in (
                ("flood_batch_same_tenant", {}, lambda b: flood_run(b, BATCH, "ui")),
                ("flood_interactive_same_tenant", {},
                 lambda b: flood_run(b, INTERACTIVE, "ui")),
                ("flood_interactive_other_tenant", {},
                 lambda b: flood_run(b, INTERACTIVE, "flooder")),
                ("aging_1s", {"batch_aging_s": 1}, lambda b: aging_run(b, 1.0)),
                ("aging_3s", {"batch_aging_s": 3}, lambda b: aging_run(b, 3.0)),
                ("tokens", {}, tokens_run)):
            b = Bench(tmp, args, **admission)
            try:
                out[key] = asyncio.run(run(b))
            finally:
                b.stop()
            if not args.json:
                print(key, json.dumps(out[key]), flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("order", json.dumps(out["order"]))


if __name__ == "__main__":
    main()
