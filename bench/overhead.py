#!/usr/bin/env python3
"""The hub's cost per request and its SSE relay rate, against a microsecond upstream.

Measures, on this machine, with request logs and metrics on (as in production):
- hub CPU per non-stream request (utime+stime of the hub process / requests) and the
  request rate under `wrk` load (the hub is one process, so this is one core);
- added latency at concurrency 1 (wrk median via hub minus direct);
- SSE chunks relayed per second for one long stream.

Usage: python -m bench.overhead [--seconds 10] [--auth]   (needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.tokens import bench_auth
from tests.support.hubproc import HubProcess
from tests.support.procs import ROOT, Proc, free_port, wait_http

BODY = ('{"model":"bench","max_tokens":1,"messages":[{"role":"user","content":'
        '"Say something short about load balancers."}]}')
LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
%s
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wrk(url: str, script: Path, conns: int, seconds: int) -> tuple[int, float, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s",
                          str(script), url], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    assert m is not None, out
    median_ms = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert non2xx is None, out
    return requests, rps, median_ms


def stream_rate(port: int, token: str = "") -> tuple[int, float]:
    body = BODY.replace('"max_tokens":1', '"stream":true').encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\n{auth}"
                     f"Content-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        data = bytearray()
        while not data.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of a chunked body
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        elapsed = time.perf_counter() - start
    events = bytes(data).count(b"data: ") - 1  # minus [DONE]
    return events, elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--auth", action="store_true", help="JWT auth on (HS256)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        upstream = Proc([sys.executable, "-m", "bench.fast_upstream", "--port", str(port),
                         "--chunks", str(args.chunks)], tmp / "upstream.log",
                        {**os.environ, "PYTHONPATH": str(ROOT)})
        upstream.start()
        wait_http(f"http://127.0.0.1:{port}/health", upstream.proc)
        config: dict[str, object] = {"log_level": "info",
                                     "workers": [{"name": "w0",
                                                  "url": f"http://127.0.0.1:{port}"}]}
        headers = ""
        token = ""
        env: dict[str, str] = {}
        if args.auth:
            auth_cfg, token, env = bench_auth(tmp)
            config["auth"] = auth_cfg
            headers = f'wrk.headers["Authorization"] = "Bearer {token}"'
        hub = HubProcess(config, tmp, env).start()
        script = tmp / "post.lua"
        script.write_text(LUA % (BODY, headers))
        try:
            direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            hub_url = f"{hub.url}/v1/chat/completions"
            wrk(hub_url, script, 8, 2)  # warm up
            _, _, direct_c1 = wrk(direct_url, script, 1, args.seconds // 2 or 1)
            _, _, hub_c1 = wrk(hub_url, script, 1, args.seconds // 2 or 1)
            before = cpu_seconds(hub.proc.pid)
            n, rps, _ = wrk(hub_url, script, 32, args.seconds)
            cpu = cpu_seconds(hub.proc.pid) - before
            print(f"non-stream, 32 connections, {args.seconds}s: {n} requests, {rps:.0f} req/s")
            print(f"hub CPU per request: {cpu / n * 1e6:.0f} us ({cpu:.2f} s CPU)")
            print(f"concurrency 1 median: direct {direct_c1:.3f} ms, via hub {hub_c1:.3f} ms, "
                  f"added {hub_c1 - direct_c1:.3f} ms")
            stream_rate(hub.port, token)  # warm up
            before = cpu_seconds(hub.proc.pid)
            events, elapsed = stream_rate(hub.port, token)
            cpu = cpu_seconds(hub.proc.pid) - before
            d_events, d_elapsed = stream_rate(port)
            print(f"SSE relay: {events} events in {elapsed:.3f}s = {events / elapsed:,.0f} "
                  f"events/s via hub (hub CPU {cpu:.2f}s); direct {d_events / d_elapsed:,.0f}/s")
        finally:
            hub.stop()
            upstream.stop()


if __name__ == "__main__":
    main()
