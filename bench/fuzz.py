#!/usr/bin/env python3
"""A long malformed-request fuzzing campaign against a real hub process.

The same target and generators as tests/security/test_fuzz.py (see
tests/security/fuzzing.py): the hub with auth and admission on, in front of
recording upstreams that answer 200 to anything, so every 5xx is the hub's own.
Prints the status histogram, the hub's unhandled exceptions by type, the 5xx cases
(bearer tokens elided) and the slowest requests; exits 1 if any answer was a 5xx.

Usage: python -m bench.fuzz [--examples 20000] [--seconds 600] [--procs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.security.fuzzing import FuzzTarget, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=600.0, help="cap on the sending time")
    ap.add_argument("--procs", type=int, default=2, help="generator processes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="spokehub-fuzz-") as d:
        target = FuzzTarget.start(Path(d))
        try:
            rss_before = target.rss_kb()
            report = run(target, args.examples, args.seconds, procs=args.procs)
            rss_after = target.rss_kb()
            problems = target.healthy()
            unhandled = target.unhandled_errors()
        finally:
            target.stop()
    if args.json:
        print(json.dumps({"sent": report.sent, "seconds": round(report.seconds, 1),
                          "statuses": dict(report.statuses), "five_xx": report.five_xx,
                          "families": dict(report.families),
                          "unhandled": dict(unhandled), "after": problems,
                          "rss_kb": [rss_before, rss_after],
                          "server_errors": report.server_errors[:50]}, indent=2))
    else:
        print(report.summary())
        print(f"hub RSS: {rss_before} kB -> {rss_after} kB")
        print("after the run: " + ("healthy, every well-formed request kind served"
                                   if not problems else "; ".join(problems)))
        if unhandled:
            print("unhandled exceptions in the hub log (each one a 500):")
            for line, n in unhandled.most_common():
                print(f"  {n:6d}  {line}")
        if report.server_errors:
            print(f"5xx cases (first 20 of {len(report.server_errors)}):")
            print(report.errors(20))
        print("slowest requests:")
        for took, brief in report.slowest:
            print(f"  {took:.3f}s  {brief}")
    return 1 if report.five_xx or problems else 0


if __name__ == "__main__":
    sys.exit(main())
