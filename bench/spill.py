#!/usr/bin/env python3
"""What spill-over costs: a request's latency when it stays local, when it spills
because no local worker is up, and when a first-byte budget cancels a hanging local
attempt and spills.

Real processes: fault workers as the local worker and as the fallback provider (both
answer a non-stream chat after ``delay_s`` = 10 ms), one hub per scenario. Reports the
median and p95 of N sequential small requests over a keep-alive connection.

Usage: python -m bench.spill [-n 100] [--budget-ms 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.procs import free_port

BODY = json.dumps({"model": "tiny", "max_tokens": 1,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


def timed(conn: http.client.HTTPConnection, tier: str) -> float:
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    elapsed = time.perf_counter() - start
    assert resp.status == 200, resp.status
    assert resp.getheader("X-Spokehub-Tier") == tier, resp.getheader("X-Spokehub-Tier")
    return elapsed


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run(name: str, config: dict[str, Any], tier: str, n: int, tmp: Path) -> None:
    hub = HubProcess({**config, "log_level": "warning",
                      "health": {"interval_s": 60, "timeout_s": 1}}, tmp).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
        for _ in range(5):
            timed(conn, tier)
        ms = [timed(conn, tier) * 1000 for _ in range(n)]
        conn.close()
        print(f"{name:<34} median {statistics.median(ms):8.2f} ms   p95 {pct(ms, 0.95):8.2f} ms")
    finally:
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--budget-ms", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        remote = FaultWorker(tmp, "tiny-remote").start()
        local = FaultWorker(tmp, "tiny").start()
        hang = FaultWorker(tmp, "tiny", mode="hang").start()
        cloud = {"name": "cloud", "kind": "openai", "url": f"{remote.url}/v1",
                 "tier": "fallback", "model_map": {"tiny": "tiny-remote"}}
        spill = {"enabled": True, "first_byte_ms": {"interactive": args.budget_ms}}
        try:
            run("local (spill on, not needed)",
                {"workers": [{"name": "w0", "url": local.url}, cloud], "spill": spill},
                "local", args.n, tmp)
            run("no_local (local down)",
                {"workers": [{"name": "w0", "url": f"http://127.0.0.1:{free_port()}"},
                             cloud], "spill": spill}, "fallback", args.n, tmp)
            run(f"first_byte_budget ({args.budget_ms} ms)",
                {"workers": [{"name": "w0", "url": hang.url}, cloud], "spill": spill},
                "fallback", args.n, tmp)
        finally:
            for w in (remote, local, hang):
                w.stop()


if __name__ == "__main__":
    main()
