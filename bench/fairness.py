#!/usr/bin/env python3
"""Tenant fairness: a well-behaved tenant's latency while another tenant floods the hub.

Two tenants (JWT auth; the tenant is a token claim) share one worker whose
``max_concurrency`` the hub enforces. The victim sends an open-loop stream of
requests (``--victim-rps``); the flooder keeps ``--flood-concurrency`` requests in
flight, far beyond its rate, from a separate process (so its event loop cannot
delay the victim's timing). Three runs, each on a fresh hub:

- ``alone``: the victim only, per-tenant admission on;
- ``flood, admission``: victim + flooder with per-tenant limits (the flooder gets 429s);
- ``flood, no admission``: the same flood with no per-tenant limits, for contrast: the
  flooder fills the worker and the hub's shared capacity queue.

The worker is tests/support/fault_worker.py answering after ``--worker-delay``
seconds (default), or a real llama-server with ``--worker llama`` (tiny model,
``--max-concurrency`` slots).

Usage: python -m bench.fairness [--seconds 15] [--flood-concurrency 64] [--victim-rps 4]
                                [--worker fault|llama] [--worker-delay 0.1]
                                [--max-concurrency 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.security.support import AUDIENCE, ISSUER, claims, hmac_secret, sign, wait_until
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.procs import ROOT, http_status

ENV = "SPOKEHUB_BENCH_FAIR_SECRET"
BODY = {"messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 8}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# -- the flooder (a child process) ---------------------------------------------------------

async def flood(url: str, token: str, model: str, concurrency: int, seconds: float
                ) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    body = {**BODY, "model": model}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one() -> None:
            while loop.time() < stop:
                try:
                    async with session.post(url, json=body, headers=headers) as resp:
                        await resp.read()
                        statuses[str(resp.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return {"statuses": dict(statuses), "seconds": seconds}


# -- the victim ----------------------------------------------------------------------------

async def victim(url: str, token: str, model: str, rps: float, seconds: float
                 ) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    body = {**BODY, "model": model}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one() -> None:
            start = loop.time()
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1
                    if resp.status == 200:
                        latencies.append(loop.time() - start)
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

        tasks = []
        first = loop.time()
        for i in range(int(rps * seconds)):  # open loop: on schedule, answered or not
            await asyncio.sleep(max(0.0, first + i / rps - loop.time()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, statuses


# -- one run -------------------------------------------------------------------------------

def hub_config(worker_url: str, max_concurrency: int, admission: bool) -> dict[str, Any]:
    limits: dict[str, Any] = {"worker_queue_max": 1000, "worker_queue_timeout_s": 60}
    if admission:
        limits["tenants"] = {
            "flooder": {"requests_per_s": 10, "burst": 10, "max_queue": 4,
                        "queue_timeout_s": 1},
            "victim": {"requests_per_s": 10, "burst": 10, "max_queue": 8,
                       "queue_timeout_s": 5}}
    return {"health": {"interval_s": 1, "timeout_s": 2},
            "log_level": "warning",
            "auth": {"enabled": True, "audience": AUDIENCE, "issuer": ISSUER,
                     "keys": [{"kid": "bench", "alg": "HS256", "secret_env": ENV}]},
            "admission": limits,
            "workers": [{"name": "w0", "url": worker_url, "max_concurrency": max_concurrency}]}


def run_one(label: str, args: argparse.Namespace, worker_url: str, model: str, tmp: Path,
            *, with_flood: bool, admission: bool) -> dict[str, Any]:
    secret = hmac_secret()
    tokens = {t: sign(claims(t, ttl_s=3600), secret, "HS256", "bench")
              for t in ("flooder", "victim")}
    hub = HubProcess(hub_config(worker_url, args.max_concurrency, admission), tmp,
                     {ENV: secret})
    hub.start()
    try:
        wait_until(lambda: http_status(f"{hub.url}/readyz") == 200, timeout=30)
        url = f"{hub.url}/v1/chat/completions"
        child = None
        if with_flood:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.fairness", "--flood-child", url,
                 tokens["flooder"], model, str(args.flood_concurrency),
                 str(args.seconds + 1)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)  # the flood is at full strength before the victim starts
        latencies, statuses = asyncio.run(victim(url, tokens["victim"], model,
                                                 args.victim_rps, args.seconds))
        flood_result: dict[str, Any] = {}
        if child is not None:
            out, _ = child.communicate(timeout=args.seconds + 180)
            flood_result = json.loads(out.strip().splitlines()[-1])
    finally:
        hub.stop()
    sent = int(args.victim_rps * args.seconds)
    return {"run": label, "victim_sent": sent, "victim_statuses": dict(statuses),
            "victim_ok": len(latencies),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 95) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
            "flood": flood_result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--flood-concurrency", type=int, default=64)
    ap.add_argument("--victim-rps", type=float, default=4.0)
    ap.add_argument("--worker", choices=("fault", "llama"), default="fault")
    ap.add_argument("--worker-delay", type=float, default=0.1)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--flood-child", nargs=5, metavar=("URL", "TOKEN", "MODEL", "CONC", "S"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flood_child:
        url, token, model, conc, seconds = args.flood_child
        print(json.dumps(asyncio.run(flood(url, token, model, int(conc), float(seconds)))))
        return

    with tempfile.TemporaryDirectory(prefix="spokehub-fair-") as d:
        tmp = Path(d)
        stop: Any
        if args.worker == "llama":
            from tests.support.llama import LlamaWorker  # noqa: PLC0415 - builds llama.cpp

            llama = LlamaWorker("tiny", tmp, slots=args.max_concurrency).start()
            worker_url, model, stop = llama.url, "tiny", llama.stop
            what = f"llama-server (tiny model, {args.max_concurrency} slots)"
        else:
            fault = FaultWorker(tmp, "fault-model", "ok", delay_s=args.worker_delay).start()
            worker_url, model, stop = fault.url, "fault-model", fault.stop
            what = f"fault worker answering in {args.worker_delay * 1000:.0f} ms"
        try:
            results = [
                run_one("alone", args, worker_url, model, tmp, with_flood=False,
                        admission=True),
                run_one("flood, admission", args, worker_url, model, tmp, with_flood=True,
                        admission=True),
                run_one("flood, no admission", args, worker_url, model, tmp,
                        with_flood=True, admission=False),
            ]
        finally:
            stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"worker: {what}, hub max_concurrency {args.max_concurrency}; victim "
          f"{args.victim_rps:g} req/s open loop for {args.seconds:g} s; flooder "
          f"{args.flood_concurrency} in flight")
    print(f"{'run':22s} {'victim ok':>10s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} "
          f"{'max ms':>8s}  flooder statuses")
    for r in results:
        fl = r["flood"].get("statuses", {})
        rate = sum(fl.values()) / r["flood"]["seconds"] if fl else 0
        fl_text = (", ".join(f"{k}: {v}" for k, v in sorted(fl.items()))
                   + f" ({rate:.0f} req/s)") if fl else "-"
        print(f"{r['run']:22s} {r['victim_ok']:>4d}/{r['victim_sent']:<5d} {r['p50_ms']:8.1f} "
              f"{r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f}  {fl_text}")


if __name__ == "__main__":
    main()
