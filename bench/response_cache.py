#!/usr/bin/env python3
"""Response cache: a miss (answered by a real llama-server) vs a hit (from the hub's
memory), through the same hub.

Starts a real llama-server (tiny model, one slot) and a hub with ``response_cache``
on. Each of N rounds sends a chat request with a prompt not seen before (a miss: the
worker generates ``--max-tokens`` tokens, ignoring EOS), then the same request again,
non-stream (a hit, the same bytes) and streamed (a hit replayed as SSE, read to
``[DONE]``), over keep-alive connections. Reports p50 and p95 of each and the ratio of
the p50s. The tiny model generates far faster than a real one, so the ratio here is a
floor: with a real model a miss takes seconds and a hit the same fraction of a
millisecond.

Usage: python -m bench.response_cache [-n 100] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker


def timed(conn: http.client.HTTPConnection, body: dict[str, Any]) -> tuple[float, str, bytes]:
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    elapsed = time.perf_counter() - start
    assert resp.status == 200, (resp.status, raw[:200])
    return elapsed, resp.getheader("X-Spokehub-Cache") or "-", raw


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        worker = LlamaWorker("tiny", Path(tmp), slots=1).start()
        env = {"SPOKEHUB_CACHE_PEPPER": secrets.token_hex(32)}
        hub = HubProcess({"workers": [{"name": "w0", "url": worker.url}],
                          "response_cache": {"enabled": True},
                          "log_level": "warning"}, Path(tmp), env).start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", hub.port)
            miss, hit, hit_sse = [], [], []
            for i in range(-10, args.n):  # 10 rounds of warm-up
                body = {"model": "tiny", "temperature": 0, "max_tokens": args.max_tokens,
                        "ignore_eos": True,
                        "messages": [{"role": "user", "content": f"Question {i}: why?"}]}
                m, m_state, m_raw = timed(conn, body)
                h, h_state, h_raw = timed(conn, body)
                s, s_state, s_raw = timed(conn, {**body, "stream": True})
                assert (m_state, h_state, s_state) == ("miss", "hit", "hit")
                assert h_raw == m_raw and s_raw.rstrip().endswith(b"data: [DONE]")
                if i >= 0:
                    miss.append(m)
                    hit.append(h)
                    hit_sse.append(s)
            print(f"rounds: {args.n}, non-stream chat, max_tokens={args.max_tokens} "
                  f"(ignore_eos), tiny model, one llama-server slot")
            for name, values in (("miss (worker)", miss), ("hit (whole)", hit),
                                 ("hit (as SSE)", hit_sse)):
                print(f"{name:14} p50 {statistics.median(values) * 1000:8.3f} ms  "
                      f"p95 {pct(values, 0.95) * 1000:8.3f} ms")
            ratio = statistics.median(hit) / statistics.median(miss)
            print(f"hit p50 / miss p50: {ratio:.4f} "
                  f"(a hit takes {ratio * 100:.2f}% of a miss's time)")
        finally:
            hub.stop()
            worker.stop()


if __name__ == "__main__":
    main()
