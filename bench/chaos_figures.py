#!/usr/bin/env python3
"""Run the resilience tests and print the figures each one measured.

Each test in tests/chaos keeps its numbers (requests sent / failed, time from the fault to
the breaker opening, time to recovery, ...) in its report's ``user_properties``; this
collects them across ``--runs`` runs and prints one table per test, with the test's own
duration and outcome.

Usage: python -m bench.chaos_figures [--runs 3] [-k EXPR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Collector:
    """A pytest plugin that keeps each test's call-phase outcome, duration and figures."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.rows.append({"test": report.nodeid.split("::")[-1],
                              "outcome": report.outcome,
                              "seconds": round(report.duration, 2),
                              **dict(report.user_properties)})


def _cell(values: list[object]) -> str:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        nums = [float(v) for v in values if isinstance(v, int | float)]
        if len(set(nums)) == 1:
            return f"{values[0]}"
        return f"{min(nums):g} .. {max(nums):g} (median {sorted(nums)[len(nums) // 2]:g})"
    return ", ".join(str(v) for v in values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    ap.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = ap.parse_args(argv)
    collector = Collector()
    codes = []
    for _ in range(args.runs):
        pytest_args = [str(ROOT / "tests" / "chaos"), "-q", "-p", "no:cacheprovider"]
        if args.select:
            pytest_args += ["-k", args.select]
        codes.append(int(pytest.main(pytest_args, plugins=[collector])))
    by_test: dict[str, list[dict[str, object]]] = defaultdict(list)
    for row in collector.rows:
        by_test[str(row["test"])].append(row)
    for test, rows in by_test.items():
        print(f"\n{test}")
        keys = [k for k in rows[0] if k != "test"]
        for row in rows[1:]:
            keys += [k for k in row if k not in keys and k != "test"]
        for key in keys:
            print(f"  {key:40} {_cell([r[key] for r in rows if key in r])}")
    if args.json:
        args.json.write_text(json.dumps(collector.rows, indent=1))
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
