#!/usr/bin/env python3
"""Added latency of the hub vs calling a llama.cpp worker directly.

Starts a real llama-server (tiny model) and a hub in front of it, then sends N
small non-stream chat requests (max_tokens=1) alternately to the worker and
through the hub over keep-alive connections, and reports medians and p95s.

Usage: python -m bench.latency [-n 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker

BODY = json.dumps({"model": "tiny", "max_tokens": 1, "temperature": 0,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


def timed(conn: http.client.HTTPConnection, path: str) -> float:
    start = time.perf_counter()
    conn.request("POST", path, BODY, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    elapsed = time.perf_counter() - start
    assert resp.status == 200, resp.status
    return elapsed


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        worker = LlamaWorker("tiny", Path(tmp), slots=1).start()
        hub = HubProcess({"workers": [{"name": "w0", "url": worker.url}],
                          "log_level": "warning"}, Path(tmp)).start()
        try:
            direct = http.client.HTTPConnection("127.0.0.1", worker.port)
            via = http.client.HTTPConnection("127.0.0.1", hub.port)
            for _ in range(20):  # warm up both paths and the connection pool
                timed(direct, "/v1/chat/completions")
                timed(via, "/v1/chat/completions")
            d, h = [], []
            for _ in range(args.n):
                d.append(timed(direct, "/v1/chat/completions"))
                h.append(timed(via, "/v1/chat/completions"))
            md, mh = statistics.median(d), statistics.median(h)
            print(f"requests: {args.n} each, non-stream chat, max_tokens=1")
            print(f"direct  median {md * 1000:.3f} ms  p95 {pct(d, 0.95) * 1000:.3f} ms")
            print(f"via hub median {mh * 1000:.3f} ms  p95 {pct(h, 0.95) * 1000:.3f} ms")
            print(f"added   median {(mh - md) * 1000:.3f} ms")
        finally:
            hub.stop()
            worker.stop()


if __name__ == "__main__":
    main()
