#!/usr/bin/env python3
"""Hub throughput with 1, 2, ... processes on one port (``serve --processes N``).

The same load for each count: ``wrk`` with 32 keep-alive connections sending small
non-stream chat completions to a hub in front of a microsecond upstream
(bench/fast_upstream.py), request logs and metrics on, auth off. With N > 1 and
``state.backend: memory`` the hub's supervisor starts its private redis-server, as
in production. Prints req/s, the median and p99 latency and the hub's CPU per
request (all its processes) per count.

wrk, the upstream and the hub processes share the machine's cores: on a 2-core
machine the second hub process competes with them, so the gain is below 2x.

It also times one Redis command (GET, one at a time, redis.asyncio on uvloop) over
the Unix socket of the supervisor's private redis-server, the price of each shared
state operation between the processes.

Usage: python -m bench.processes [--counts 1,2,auto] [--seconds 10]
    (needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio
import uvloop

from bench.overhead import BODY, LUA, cpu_seconds
from hub.server.supervisor import PrivateRedis
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


def hub_cpu(pid: int) -> float:
    """CPU seconds of the hub: the process and, under a supervisor, its children."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(cpu_seconds(int(child)) for child in children)


def redis_rtt(commands: int = 20000) -> tuple[float, float]:
    """(median, p99) microseconds per GET over the private Redis' Unix socket."""

    async def run(url: str) -> list[float]:
        client = redis.asyncio.Redis.from_url(url)
        try:
            await client.set("k", "v")
            times = []
            for _ in range(commands):
                start = time.perf_counter()
                await client.get("k")
                times.append((time.perf_counter() - start) * 1e6)
            return times
        finally:
            await client.aclose()

    server = PrivateRedis()
    server.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            times = runner.run(run(server.url))
    finally:
        server.stop()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


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
            p50, p99 = redis_rtt()
            print(f"private Redis over its Unix socket: GET median {p50:.0f} us, "
                  f"p99 {p99:.0f} us")
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
                    before = hub_cpu(hub.proc.pid)
                    n, rps, p50, p99 = wrk(url, script, args.seconds)
                    cpu = hub_cpu(hub.proc.pid) - before
                    print(f"--processes {count}: {n} requests, {rps:,.0f} req/s, "
                          f"median {p50:.2f} ms, p99 {p99:.2f} ms; hub CPU "
                          f"{cpu / n * 1e6:.0f} us per request ({cpu:.1f} s)")
                finally:
                    hub.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
