#!/usr/bin/env python3
"""Hub throughput with 1, 2, ... processes on one port (``serve --processes N``).

The same load for each count: ``wrk`` with 32 keep-alive connections sending small
non-stream chat completions to a hub in front of a microsecond upstream
(bench/fast_upstream.py), request logs and metrics on, auth off. With N > 1 and
``state.backend: memory`` the hub's supervisor starts its private redis-server, as
in production. Prints req/s and the median and p99 latency per count.

wrk, the upstream and the hub processes share the machine's cores: on a 2-core
machine the second hub process competes with them, so the gain is below 2x.

Usage: python -m bench.processes [--counts 1,2,auto] [--seconds 10]
    (needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.overhead import BODY, LUA
from tests.support.hubproc import HubProcess
from tests.support.procs import ROOT, Proc, free_port, wait_http

CONNECTIONS = 32


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, seconds: int) -> tuple[int, float, float, float]:
    """(requests, req/s, median ms, p99 ms); fails on any non-2xx answer."""
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p50 is not None and p99 is not None, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    return requests, rps, _ms(*p50.groups()), _ms(*p99.groups())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,2", help="comma-separated --processes values")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        upstream = Proc([sys.executable, "-m", "bench.fast_upstream", "--port", str(port)],
                        tmp / "upstream.log", {**os.environ, "PYTHONPATH": str(ROOT)})
        upstream.start()
        script = tmp / "post.lua"
        script.write_text(LUA % (BODY, ""))
        try:
            wait_http(f"http://127.0.0.1:{port}/health", upstream.proc)
            print(f"cores: {len(os.sched_getaffinity(0))}; wrk -t2 -c{CONNECTIONS} "
                  f"-d{args.seconds}s, non-stream chat completions")
            for count in args.counts.split(","):
                hub = HubProcess({"log_level": "info", "workers": [
                    {"name": "w0", "url": f"http://127.0.0.1:{port}"}]}, tmp)
                hub.proc.argv += ["--processes", count]
                hub.start()
                try:
                    url = f"{hub.url}/v1/chat/completions"
                    wrk(url, script, 2)  # warm up (every process, its pool, its caches)
                    n, rps, p50, p99 = wrk(url, script, args.seconds)
                    print(f"--processes {count}: {n} requests, {rps:,.0f} req/s, "
                          f"median {p50:.2f} ms, p99 {p99:.2f} ms")
                finally:
                    hub.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
