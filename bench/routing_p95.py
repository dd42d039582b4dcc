#!/usr/bin/env python3
"""p50/p95 latency of round_robin vs least_loaded on a mixed fleet.

Two real llama.cpp servers serve the model "tiny" (see tests/e2e/fleet.py): a small
box with one slot and about three times the cost per token, and a big box with four
slots. The real spokehub-agent registers both with their slot counts. For each policy
a fresh hub sends the same bounded workload: N non-stream chat requests of exactly
--max-tokens tokens each, at concurrency C. Policies alternate over --rounds rounds so
that machine noise hits both alike; the summary is the median over rounds.

Per run it also prints how many requests the small box got, how many of those waited in
its queue behind another one, and how many of those while the big box had a free slot
(the waits a load-aware policy should avoid).

Usage: python -m bench.routing_p95 [-n 60] [-c 6] [--max-tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.fleet import (
    BIG_SLOTS,
    chat_body,
    fleet_hub,
    in_flight_at,
    percentile,
    queued_on,
    run_load,
    start_fleet,
)

POLICIES = ("round_robin", "least_loaded")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=60, help="requests per run (default 60)")
    ap.add_argument("-c", type=int, default=6, help="concurrency (default 6)")
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per answer (default 128)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per policy (default 3)")
    args = ap.parse_args()
    if not (1 <= args.n <= 10_000 and 1 <= args.c <= 64 and 1 <= args.rounds <= 20
            and 1 <= args.max_tokens <= 400):
        ap.error("keep it bounded: n 1..10000, c 1..64, rounds 1..20, max-tokens 1..400")
    body = chat_body(args.max_tokens)
    p50s: dict[str, list[float]] = {p: [] for p in POLICIES}
    p95s: dict[str, list[float]] = {p: [] for p in POLICIES}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        small, big = start_fleet(workdir)
        try:
            print(f"fleet: small box (1 slot, slower per token) :{small.port}, "
                  f"big box (4 slots) :{big.port}")
            print(f"workload: {args.n} requests x {args.max_tokens} tokens, "
                  f"concurrency {args.c}, {args.rounds} rounds")
            for rnd in range(args.rounds):
                order = POLICIES if rnd % 2 == 0 else POLICIES[::-1]
                for policy in order:
                    with fleet_hub(policy, small, big, workdir) as (hub, small_name, big_name):
                        run_load(hub.port, body, 2 * args.c, args.c)  # warm up
                        start = time.monotonic()
                        results = run_load(hub.port, body, args.n, args.c)
                        wall = time.monotonic() - start
                    failed = sum(r.status != 200 for r in results)
                    latencies = [r.latency_s for r in results]
                    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
                    p50s[policy].append(p50)
                    p95s[policy].append(p95)
                    on_small = sum(r.worker == small_name for r in results)
                    queued = queued_on(results, small_name)
                    with_room = sum(in_flight_at(results, big_name, r.started) < BIG_SLOTS
                                    for r in queued)
                    print(f"round {rnd + 1} {policy:<13} p50 {p50 * 1000:7.0f} ms  "
                          f"p95 {p95 * 1000:7.0f} ms  max {max(latencies) * 1000:7.0f} ms  "
                          f"small box {on_small:3d}/{len(results)} "
                          f"(queued {len(queued):2d}, {with_room:2d} with room elsewhere)  "
                          f"wall {wall:5.1f} s" + (f"  FAILED {failed}" if failed else ""))
        finally:
            small.stop()
            big.stop()
    print("median over rounds:")
    for policy in POLICIES:
        print(f"  {policy:<13} p50 {statistics.median(p50s[policy]) * 1000:7.0f} ms  "
              f"p95 {statistics.median(p95s[policy]) * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
