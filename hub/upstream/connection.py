"""One keep-alive connection to a worker: an asyncio protocol carrying one exchange at a time.

Body bytes are queued as they arrive and handed out by :meth:`Connection.readany`;
past a high-water mark the socket stops reading, so a slow client slows the worker
down instead of filling the hub's memory.

The connection also knows whether the request it is carrying has reached the kernel
in full (the write buffer limit is 0, so ``pause_writing``/``resume_writing`` say
exactly when bytes are still queued). A close before that point raises
:class:`UpstreamClosedEarly` (the worker cannot have acted on a partial request);
a close after it, with no response byte, raises :class:`UpstreamClosedAfterSend`.
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from collections.abc import Callable
from typing import cast

from hub.upstream.errors import (
    UpstreamBodyError,
    UpstreamClosedAfterSend,
    UpstreamClosedEarly,
    UpstreamProtocolError,
    UpstreamTransportError,
)
from hub.upstream.http1 import MAX_HEAD, BodyDecoder, Head, LengthBody, body_decoder

HIGH_WATER = 256 * 1024
MAX_INTERIM = 16  # 1xx responses skipped before the real one; more is a broken worker
Origin = tuple[str, str, int]  # scheme, host, port
_poll = getattr(select, "poll", None)  # not on Windows


class Connection(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.idle_limit = 0.0  # seconds it may stay idle in the pool
        self.exchanges = 0  # requests sent on it; more than one means it was reused
        self._writing = False  # some request bytes are still in the transport's buffer
        self._fd = -1  # the socket's descriptor, to look at it between exchanges
        self._head_buf = bytearray()  # a response head split across reads
        self.on_lost: Callable[[Connection], None] | None = None  # the pool forgets it
        self._reset()

    def _reset(self) -> None:
        self.method = "POST"
        self.head: Head | None = None
        self.length: int | None = None  # the body's declared Content-Length
        self.body_done = False
        self.got_bytes = False
        self.sent = False  # the whole request was handed to the kernel
        self._sending = False
        self._head_buf.clear()
        self._interim = 0
        self._decoder: BodyDecoder | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: UpstreamTransportError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- protocol callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1  # pause/resume_writing track "flushed"

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
            if decoder.extra:
                self._fail(UpstreamProtocolError("bytes after the end of the response body"))
        self._wake()

    def _take_head(self, data: bytes) -> bytes:
        while True:
            buf = self._head_buf
            if buf:
                scan = max(len(buf) - 3, 0)  # the blank line may straddle the reads
                buf += data
                end = buf.find(b"\r\n\r\n", scan)
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._fail(UpstreamProtocolError("response head too large"))
                    return b""
                data = bytes(buf)
                buf.clear()
            else:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD:
                        self._fail(UpstreamProtocolError("response head too large"))
                    else:
                        buf += data
                    return b""
            if end > MAX_HEAD:
                self._fail(UpstreamProtocolError("response head too large"))
                return b""
            try:
                head = Head(data[:end])
            except UpstreamProtocolError as exc:
                self._fail(exc)
                return b""
            data = data[end + 4:]
            if head.status >= 200:
                break
            if head.status == 101:  # never asked for: the connection is no longer HTTP
                self._fail(UpstreamProtocolError("unexpected 101 Switching Protocols"))
                return b""
            self._interim += 1  # 100 Continue, 103 Early Hints: the real head follows
            if self._interim > MAX_INTERIM:
                self._fail(UpstreamProtocolError("too many interim (1xx) responses"))
                return b""
            if not data:
                return b""
        try:
            decoder = body_decoder(head, self.method)
        except UpstreamProtocolError as exc:
            self._fail(exc)
            return b""
        self._decoder = decoder
        if isinstance(decoder, LengthBody):
            self.length = decoder.length
        self.head = head
        if decoder.done:
            self.body_done = True
        self._wake()
        return data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        if self.head is None:
            if self.got_bytes:
                self._fail(UpstreamProtocolError("connection closed inside the response head"))
            elif self.sent:
                self._fail(UpstreamClosedAfterSend(
                    "worker closed the connection after the request was sent, "
                    "without answering", reused=self.exchanges > 1))
            else:
                self._fail(UpstreamClosedEarly(
                    "connection closed before the request was written in full"))
        elif not self.body_done:
            if exc is None and self._decoder is not None and self._decoder.eof():
                self.body_done = True
            else:
                self._fail(UpstreamBodyError("connection lost before the end of the body"))
        self._wake()

    def pause_writing(self) -> None:
        self._writing = True

    def resume_writing(self) -> None:
        self._writing = False
        if self._sending:
            self.sent = True

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
        """Write a request. A write that fails at once leaves ``sent`` False."""
        self._reset()
        self.method = method
        self.exchanges += 1
        transport = self.transport
        assert transport is not None
        self._sending = True
        transport.write(data)
        # A failed write closes the transport at once (and nothing of it was sent);
        # a partial one leaves bytes queued, and resume_writing() reports the rest.
        self.sent = not self._writing and not transport.is_closing()

    async def read_head(self) -> Head:
        while self.head is None:
            if self._error is not None:
                raise self._error
            if self.closed:
                if self.sent:
                    raise UpstreamClosedAfterSend("worker closed the connection without "
                                                  "answering", reused=self.exchanges > 1)
                raise UpstreamClosedEarly("connection closed before the request was sent")
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
            if self._error is not None:  # even after the body: a desynchronized stream
                raise self._error
            if self.body_done:
                return b""
            await self._wait()

    @property
    def open(self) -> bool:
        return (not self.closed and self.transport is not None
                and not self.transport.is_closing())

    @property
    def reusable(self) -> bool:
        return (not self.closed and self.body_done and self._error is None
                and self.sent and not self._writing
                and self.head is not None and self.head.keep_alive
                and not self._chunks and self.transport is not None
                and not self.transport.is_closing())

    def peer_silent(self) -> bool:
        """True if the worker has sent nothing since the last exchange: no bytes, no
        close, no reset. Asked of the socket itself (a zero-timeout poll), so a close
        that the event loop has not processed yet is seen before a request is written
        into it."""
        if not self.open:
            return False
        if self._fd < 0 or _poll is None:
            return True  # nothing to look at; the exchange will tell
        # The descriptor is still the transport's: it is closed only after is_closing().
        poller = _poll()
        poller.register(self._fd, select.POLLIN)
        return not poller.poll(0)  # readable: EOF, an error, or bytes nobody asked for

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
