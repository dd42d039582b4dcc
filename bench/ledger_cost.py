#!/usr/bin/env python3
"""What the cost ledger costs the hub, in process (no network).

- per request on the event loop: ``Ledger.record`` (price, totals, a queue append; the
  writer thread runs meanwhile), ``Ledger.check`` and ``spill_allowed`` for a tenant
  with a budget;
- the writer thread's throughput: requests recorded per second until all of them are
  committed to a SQLite file on disk (WAL), with many tenants and models so batches
  hold many distinct rows.

Each per-call figure is the best of several rounds, so other load inflates it little.

Usage: python -m bench.ledger_cost [--rounds 5] [--requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from hub.forward.call import Call
from hub.ledger.budgets import parse_budgets
from hub.ledger.config import LedgerConfig
from hub.ledger.ledger import Ledger
from hub.ledger.prices import parse_prices
from hub.ledger.query import UsageQuery
from hub.observe.usage import Usage

PRICES = parse_prices({f"m{i}": {"input_per_1m": 0.15, "output_per_1m": 0.6}
                       for i in range(4)})
BUDGETS = parse_budgets({"default": {"daily_tokens": 10**15, "monthly_cost": 10**9,
                                     "on_hard": "reject"}})


def calls(n: int) -> list[Call]:
    out = []
    for i in range(n):
        c = Call(request_id=str(i), route="/chat/completions", model=f"m{i % 4}",
                 tenant=f"t{i % 50}", answered=True, worker="w0")
        c.usage = Usage(100 + i % 7, 20 + i % 5)
        out.append(c)
    return out


def best(rounds: int, fn: object, n: int) -> float:
    """Best microseconds per call over ``rounds`` rounds of ``n`` calls."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(n)  # type: ignore[operator]
        times.append((time.perf_counter() - t0) / n * 1e6)
    return min(times)


async def main(rounds: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite3"
        ledger = Ledger(PRICES, LedgerConfig(str(path)), BUDGETS, env={})
        await ledger.start()
        batch = calls(10_000)

        def record(n: int) -> None:
            for c in batch[:n]:
                ledger.record(c)

        def check(n: int) -> None:
            for i in range(n):
                ledger.check(f"t{i % 50}")

        def spill(n: int) -> None:
            for i in range(n):
                ledger.spill_allowed(f"t{i % 50}")

        print(f"record per request:        {best(rounds, record, 10_000):6.2f} µs")
        print(f"check per request:         {best(rounds, check, 10_000):6.2f} µs")
        print(f"spill_allowed per request: {best(rounds, spill, 10_000):6.2f} µs")
        await ledger.query(UsageQuery(group_by=()))  # drain what the rounds queued

        many = calls(requests)
        t0 = time.perf_counter()
        for c in many:
            ledger.record(c)
        queued = time.perf_counter() - t0
        rows = await ledger.query(UsageQuery(group_by=()))  # after every row is committed
        total = time.perf_counter() - t0
        print(f"{requests} requests: queued in {queued:.2f} s, all committed after "
              f"{total:.2f} s ({requests / total:,.0f} requests/s; "
              f"{ledger.writer.commits} commits, {ledger.writer.rows_committed} rows)")
        print(f"ledger requests in the file: {rows[0]['requests']}")
        await ledger.stop()
        print(f"file size: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.requests))
