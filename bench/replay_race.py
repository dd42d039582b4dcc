#!/usr/bin/env python3
"""How often the keep-alive race hits under bursty load, and what the pool makes of it.

A raw fake worker (a thread per connection, blocking sockets: cpp-httplib's model, as
in llama.cpp's server) closes a connection that stays idle ``--server-idle`` seconds.
The client sends bursts of ``--burst`` concurrent requests, separated by gaps drawn
uniformly within ``--jitter`` of that limit, so idle connections are reused just
before, at and just after the moment the worker drops them. Each client setting runs
the same schedule; per setting the table counts:

- ``fresh``/``reused``: requests written into a new or a kept-alive connection;
- ``expired``: idle connections the pool closed itself (its limit came first);
- ``stale``: idle connections found closed by the worker before anything was written
  (a fresh connection is used; nothing to resend);
- ``resent``: requests that had not left in full when the connection died (sent again);
- ``after send``: requests sent in full and met with a close, the race proper. The pool
  raises ``UpstreamClosedAfterSend``; before that error existed it sent them again
  silently, which is only harmless if the worker had not read them;
- ``dup``: requests the worker received twice (should always be 0).

Usage: python -m bench.replay_race [--server-idle 0.5] [--bursts 40] [--burst 8]
                                   [--jitter 0.003] [--keepalive 30 0.4]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from hub.upstream import KEEPALIVE_S, Pool, UpstreamClosedAfterSend, UpstreamTransportError

LLAMA_CPP_IDLE_S = 5.0  # cpp-httplib's default keep-alive timeout
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class IdleClosingWorker:
    """Answers every request; closes a connection idle for ``idle_s`` seconds."""

    idle_s: float
    seen: Counter[str] = field(default_factory=Counter)
    idle_closes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        sock.settimeout(self.idle_s)
        try:
            while not self._stop:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        if not buf:  # idle for idle_s: drop it, as llama.cpp does
                            with self._lock:
                                self.idle_closes += 1
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length, seq = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif name.strip().lower() == b"x-seq":
                        seq = value.strip().decode()
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                with self._lock:
                    self.seen[seq] += 1
                sock.sendall(ANSWER)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self._stop = True
        self._acceptor.join(timeout=5)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=self.idle_s + 5)


@dataclass
class Row:
    keepalive_s: float
    requests: int = 0
    ok: int = 0
    after_send: int = 0
    other_errors: int = 0
    fresh: int = 0
    reused: int = 0
    expired: int = 0
    stale: int = 0
    resent: int = 0
    dup: int = 0
    idle_closes: int = 0


async def run(keepalive_s: float, args: argparse.Namespace) -> Row:
    worker = IdleClosingWorker(args.server_idle)
    pool = Pool(keepalive_s=keepalive_s)
    row = Row(keepalive_s)
    url = f"http://127.0.0.1:{worker.port}/v1/chat/completions"
    rng = random.Random(args.seed)

    async def one(seq: str) -> None:
        try:
            resp = await pool.request("POST", url, {"X-Seq": seq}, b'{"prompt":"x"}', 5.0)
            try:
                await resp.read()
            finally:
                resp.release()
            row.ok += 1
        except UpstreamClosedAfterSend:
            row.after_send += 1
        except UpstreamTransportError:
            row.other_errors += 1

    try:
        for burst in range(args.bursts):
            await asyncio.gather(*(one(f"{burst}.{i}") for i in range(args.burst)))
            row.requests += args.burst
            gap = args.server_idle + rng.uniform(-args.jitter, args.jitter)
            await asyncio.sleep(max(gap, 0.0))
    finally:
        pool.close()
        await asyncio.sleep(0.05)
        worker.close()
    stats = pool.stats
    row.fresh = stats.opened  # every new connection carries one request first
    row.reused, row.expired, row.stale = stats.reused, stats.expired, stats.stale
    row.resent = stats.resent
    row.dup = sum(1 for n in worker.seen.values() if n > 1)
    row.idle_closes = worker.idle_closes
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-idle", type=float, default=0.5,
                    help="worker's idle limit, seconds (llama.cpp: 5; scaled down to run fast)")
    ap.add_argument("--bursts", type=int, default=40)
    ap.add_argument("--burst", type=int, default=8, help="concurrent requests per burst")
    ap.add_argument("--jitter", type=float, default=0.003,
                    help="gaps are server-idle +- this many seconds")
    ap.add_argument("--keepalive", type=float, nargs="*",
                    help="client idle limits to compare (default: 30, the old default, "
                         "and the new default scaled like the server: "
                         f"{KEEPALIVE_S}/{LLAMA_CPP_IDLE_S} of it)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    settings = args.keepalive or [30.0, args.server_idle * KEEPALIVE_S / LLAMA_CPP_IDLE_S]
    print(f"worker closes idle connections after {args.server_idle} s; {args.bursts} bursts "
          f"of {args.burst}, gaps {args.server_idle} +- {args.jitter} s")
    header = ("client idle", "requests", "ok", "fresh", "reused", "expired", "stale",
              "resent", "after send", "dup")
    print(" | ".join(f"{h:>10}" for h in header))
    for keepalive_s in settings:
        started = time.monotonic()
        row = asyncio.run(run(keepalive_s, args))
        cells = (f"{row.keepalive_s:g} s", row.requests, row.ok, row.fresh, row.reused,
                 row.expired, row.stale, row.resent, row.after_send, row.dup)
        print(" | ".join(f"{c:>10}" for c in cells)
              + f"   ({time.monotonic() - started:.0f} s; other errors {row.other_errors})")


if __name__ == "__main__":
    main()
