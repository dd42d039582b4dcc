"""Keep-alive connections to workers, and the response object the proxy reads.

One :class:`Connection` (an asyncio protocol) carries one exchange at a time. Body
bytes are queued as they arrive and handed out by :meth:`Response.readany`; past a
high-water mark the socket stops reading, so a slow client slows the worker down
instead of filling the hub's memory. A response whose body was read to its end on a
keep-alive connection returns the connection to the pool; anything else (a
cancelled stream, an error) closes it, which is how a worker learns the client left.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

from hub.upstream.errors import (
    UpstreamBodyError,
    UpstreamClosedEarly,
    UpstreamConnectFailed,
    UpstreamProtocolError,
    UpstreamTransportError,
)
from hub.upstream.http1 import MAX_HEAD, BodyDecoder, Head, body_decoder, request_bytes

HIGH_WATER = 256 * 1024
Origin = tuple[str, str, int]  # scheme, host, port


class Connection(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.method = "POST"
        self.head: Head | None = None
        self.body_done = False
        self.got_bytes = False
        self._head_buf = b""
        self._decoder: BodyDecoder | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: UpstreamTransportError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- protocol callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.head is None:
            data = self._take_head(data)
            if self.head is None:
                return
        decoder = self._decoder
        if decoder is None or self.body_done:
            if data:
                self._fail(UpstreamProtocolError("bytes after the end of the response"))
            return
        try:
            out = decoder.feed(data) if data else b""
        except UpstreamProtocolError as exc:
            self._fail(exc)
            return
        if out:
            self._chunks.append(out)
            self._buffered += len(out)
            if self._buffered > HIGH_WATER and not self._paused and self.transport:
                self._paused = True
                self.transport.pause_reading()
        if decoder.done:
            self.body_done = True
        self._wake()

    def _take_head(self, data: bytes) -> bytes:
        buf = self._head_buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._head_buf = buf
                if len(buf) > MAX_HEAD:
                    self._fail(UpstreamProtocolError("response head too large"))
                return b""
            try:
                head = Head(buf[:end])
            except UpstreamProtocolError as exc:
                self._fail(exc)
                return b""
            buf = buf[end + 4:]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # informational (100 Continue): the real head follows
            break
        self._head_buf = b""
        try:
            self._decoder = body_decoder(head, self.method)
        except UpstreamProtocolError as exc:
            self._fail(exc)
            return b""
        self.head = head
        if self._decoder.done:
            self.body_done = True
        self._wake()
        return buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head is None:
            if self.got_bytes:
                self._fail(UpstreamProtocolError("connection closed inside the response head"))
            else:
                self._fail(UpstreamClosedEarly("worker closed the connection without answering"))
        elif not self.body_done:
            if self._decoder is not None and self._decoder.eof():
                self.body_done = True
            else:
                self._fail(UpstreamBodyError("connection lost before the end of the body"))
        self._wake()

    def pause_writing(self) -> None:  # request bodies are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # -- the exchange ---------------------------------------------------------------
    def _fail(self, error: UpstreamTransportError) -> None:
        if self._error is None:
            self._error = error
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def send(self, data: bytes, method: str) -> None:
        self._reset()
        self.method = method
        assert self.transport is not None
        self.transport.write(data)

    async def read_head(self) -> Head:
        while self.head is None:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise UpstreamClosedEarly("worker closed the connection without answering")
            await self._wait()
        return self.head

    async def readany(self) -> bytes:
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.body_done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    @property
    def reusable(self) -> bool:
        return (not self.closed and self.body_done and self._error is None
                and self.head is not None and self.head.keep_alive
                and not self._chunks and self.transport is not None
                and not self.transport.is_closing())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """What the proxy reads: status, headers, body as it arrives."""

    __slots__ = ("_conn", "_pool", "_released", "head")

    def __init__(self, pool: Pool, conn: Connection, head: Head) -> None:
        self._pool = pool
        self._conn = conn
        self._released = False
        self.head = head

    @property
    def status(self) -> int:
        return self.head.status

    def header(self, name: str, default: str = "") -> str:
        return self.head.get(name, default)

    async def readany(self) -> bytes:
        """The next bytes of the body as soon as any arrive; b"" at its end."""
        return await self._conn.readany()

    async def read(self, limit: int | None = None) -> bytes:
        """The body up to its end (or ``limit`` bytes)."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self._conn.readany():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)

    def is_eof(self) -> bool:
        return self._conn.body_done and not self._conn._chunks

    def release(self) -> None:
        """Done with the response: pool the connection if it is clean, else close it."""
        if not self._released:
            self._released = True
            self._pool._release(self._conn)

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._conn.close()


class Pool:
    def __init__(self, *, keepalive_s: float = 30.0, max_idle_per_origin: int = 64,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_s = keepalive_s
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}
        self._urls: dict[str, tuple[Origin, str, str]] = {}
        self.opened = 0

    def _parse(self, url: str) -> tuple[Origin, str, str]:
        hit = self._urls.get(url)
        if hit is None:
            parts = urlsplit(url)
            scheme = parts.scheme
            host = parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default = port == (443 if scheme == "https" else 80)
            name = f"[{host}]" if ":" in host else host  # IPv6 literals keep their brackets
            host_header = name if default else f"{name}:{port}"
            hit = ((scheme, host, port), target, host_header)
            if len(self._urls) > 10_000:
                self._urls.clear()
            self._urls[url] = hit
        return hit

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            ctx = self._ssl or ssl.create_default_context()
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
        self.opened += 1
        return conn

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if (not conn.closed and conn.transport is not None
                    and not conn.transport.is_closing()
                    and now - conn.idle_since < self.keepalive_s):
                return conn
            conn.close()
        return None

    def _release(self, conn: Connection) -> None:
        if not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Response:
        """Send a request and wait for the response head (not the body)."""
        origin, target, host_header = self._parse(url)
        data = request_bytes(method, target, host_header, headers, body)
        conn = self._take_idle(origin)
        if conn is not None:
            conn.send(data, method)
            try:
                return Response(self, conn, await conn.read_head())
            except UpstreamClosedEarly:
                conn.close()  # the worker closed an idle connection as we reused it
            except BaseException:
                conn.close()
                raise
        conn = await self._connect(origin, connect_timeout)
        conn.send(data, method)
        try:
            return Response(self, conn, await conn.read_head())
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
