"""Keep-alive connections to workers, reused only while provably safe.

Idle connections are kept at most ``keepalive_s`` (default 4 s, under the 5 s after
which llama.cpp's server closes them; less if a worker's ``Keep-Alive: timeout=``
asks for it) and are closed by a sweep after that, which also frees the worker's
per-connection threads. Before a request is written into a reused connection the
socket is polled: a worker that closed it (or sent bytes nobody asked for) gets a
fresh connection instead, and nothing was sent. The one request the pool sends twice
is one that did not reach the kernel in full on a reused connection; a request sent
in full and then met with a close raises :class:`UpstreamClosedAfterSend` and is
never sent again (the worker may have read it and worked on it).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from dataclasses import dataclass

from hub.upstream.connection import Connection, Origin
from hub.upstream.errors import (
    UpstreamClosedAfterSend,
    UpstreamClosedEarly,
    UpstreamConnectFailed,
    UpstreamInvalidRequest,
)
from hub.upstream.http1 import request_bytes
from hub.upstream.response import Response
from hub.upstream.url import Target, split_url

KEEPALIVE_S = 4.0  # llama.cpp's server closes idle connections after 5 s
MAX_BODY = 8 * 1024 * 1024  # Response.read() refuses longer answers by default
KEEPALIVE_HINT_SHARE = 0.8  # of a worker's own "Keep-Alive: timeout=N"
_MAX_CACHED = 10_000


@dataclass(slots=True)
class PoolStats:
    """Counters since the pool was made (for metrics and benchmarks)."""

    opened: int = 0  # connections made
    reused: int = 0  # requests written into a kept-alive connection
    expired: int = 0  # idle connections closed by the pool's own idle limit
    stale: int = 0  # idle connections found closed (or talking) at checkout, never written to
    resent: int = 0  # requests sent again after a reused connection closed mid-write
    closed_after_send: int = 0  # requests sent in full, then closed on: raised, not resent


class Pool:
    def __init__(self, *, keepalive_s: float = KEEPALIVE_S, max_idle_per_origin: int = 64,
                 max_body_bytes: int = MAX_BODY,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if not (keepalive_s >= 0 and math.isfinite(keepalive_s)):
            raise ValueError("keepalive_s must be a finite number >= 0")
        if max_body_bytes < 0 or max_idle_per_origin < 0:
            raise ValueError("max_body_bytes and max_idle_per_origin must be >= 0")
        self.keepalive_s = keepalive_s
        self.max_idle_per_origin = max_idle_per_origin
        self.max_body_bytes = max_body_bytes
        self._ssl = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}
        self._live: set[Connection] = set()  # every connection not yet lost, idle or in use
        self._closed = False
        self._targets: dict[str, Target] = {}
        self._hints: dict[str, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self.stats = PoolStats()

    @property
    def opened(self) -> int:
        return self.stats.opened

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            try:
                target = split_url(url)
            except ValueError as exc:
                raise UpstreamInvalidRequest(f"worker URL cannot be used: {exc}") from None
            if len(self._targets) >= _MAX_CACHED:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()  # the system's CA store, loaded once
            ctx = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(origin), host, port, ssl=ctx,
                    server_hostname=host if ctx else None)
        except TimeoutError:
            raise UpstreamConnectFailed(f"connect to {host}:{port} timed out") from None
        except OSError as exc:
            raise UpstreamConnectFailed(f"connect to {host}:{port} failed: {exc.strerror or exc}",
                                        exc) from None
        self.stats.opened += 1
        if not conn.closed:  # lost already: it has nothing left to close
            conn.on_lost = self._live.discard
            self._live.add(conn)
        return conn

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used first: the least likely to be stale
            if now - conn.idle_since >= conn.idle_limit:
                self.stats.expired += 1
                conn.close()
            elif not conn.peer_silent():
                self.stats.stale += 1
                conn.close()
            else:
                return conn
        return None

    def _release(self, conn: Connection) -> None:
        if self._closed or not conn.reusable:
            conn.close()
            return
        assert conn.head is not None  # reusable means answered
        hint = conn.head.headers.get("keep-alive")
        limit = self.keepalive_s if hint is None else self._idle_limit(hint)
        idle = self._idle.get(conn.origin)
        if idle is None:
            idle = self._idle[conn.origin] = []
        if limit <= 0 or len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.idle_since = now = time.monotonic()
        conn.idle_limit = limit
        idle.append(conn)
        if now + limit < self._sweep_at:
            self._schedule_sweep(now + limit)

    def _idle_limit(self, value: str) -> float:
        """The pool's limit, shortened by a worker's ``Keep-Alive: timeout=N``."""
        hint = self._hints.get(value)
        if hint is None:
            hint = _keepalive_timeout(value) * KEEPALIVE_HINT_SHARE
            if len(self._hints) >= 64:
                self._hints.clear()
            self._hints[value] = hint
        return min(self.keepalive_s, hint)

    def _schedule_sweep(self, due: float) -> None:
        if due >= self._sweep_at:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # released outside a loop: checkout still enforces the limit
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = due
        self._sweeper = loop.call_later(max(due - time.monotonic(), 0.0), self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past their limit; run again when the next one is due."""
        self._sweeper = None
        self._sweep_at = math.inf
        now = time.monotonic()
        next_due = math.inf
        for origin, idle in list(self._idle.items()):
            keep: list[Connection] = []
            for conn in idle:
                due = conn.idle_since + conn.idle_limit
                if not conn.open:
                    conn.close()
                    continue
                if due - now < 0.001:  # timers may fire a hair early
                    self.stats.expired += 1
                    conn.close()
                else:
                    keep.append(conn)
                    next_due = min(next_due, due)
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        if next_due < math.inf:
            self._schedule_sweep(next_due)

    def idle_count(self) -> int:
        """Idle connections that are still open."""
        return sum(1 for idle in self._idle.values() for conn in idle if conn.open)

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Response:
        """Send a request and wait for the response head (not the body).

        Raises :class:`UpstreamInvalidRequest` (nothing sent) for a URL or header that
        cannot be encoded, and the other UpstreamTransportErrors for what the worker did.
        """
        target = self._targets.get(url) or self._target(url)
        data = request_bytes(method, target.request_target, target.authority, headers, body)
        conn = self._take_idle(target.origin)
        if conn is not None:
            self.stats.reused += 1
            conn.send(data, method)
            try:
                return Response(conn, await conn.read_head(), self._release,
                                self.max_body_bytes)
            except UpstreamClosedEarly:
                conn.close()
                self.stats.resent += 1  # not all of it reached the worker: send it again
            except BaseException as exc:
                self._failed(conn, exc)
                raise
        conn = await self._connect(target.origin, connect_timeout)
        conn.send(data, method)
        try:
            return Response(conn, await conn.read_head(), self._release, self.max_body_bytes)
        except BaseException as exc:
            self._failed(conn, exc)
            raise

    def _failed(self, conn: Connection, exc: BaseException) -> None:
        conn.close()
        if isinstance(exc, UpstreamClosedAfterSend):
            self.stats.closed_after_send += 1

    def close(self) -> None:
        """Close every connection, idle or still carrying a response (whose reader then
        gets an :class:`UpstreamBodyError`); a response released later is closed too."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._sweep_at = math.inf
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._live):
            conn.close()


def _keepalive_timeout(value: str) -> float:
    """The ``timeout=N`` of a Keep-Alive header (``timeout=5, max=100``); inf if none."""
    for param in value.split(","):
        name, _, number = param.partition("=")
        if name.strip(" \t").lower() == "timeout":
            number = number.strip(" \t")
            if number.isascii() and number.isdigit() and len(number) <= 6:
                return float(number)
    return math.inf
