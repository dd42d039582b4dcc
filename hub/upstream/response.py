"""What the proxy reads: status, headers, and the body as it arrives or whole (capped).

A response whose body was read to its end on a keep-alive connection returns the
connection to the pool; anything else (a cancelled stream, an error, a body over the
cap) closes it, which is how a worker learns the client left. A response dropped
without either closes its connection when it is collected, with a ResourceWarning:
the event loop holds the connection, so nothing else would ever close it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

from hub.upstream.connection import Connection
from hub.upstream.errors import UpstreamBodyTooLarge
from hub.upstream.http1 import Head


class Response:
    __slots__ = ("_conn", "_max_body", "_release_to", "_released", "head")

    def __init__(self, conn: Connection, head: Head, release_to: Callable[[Connection], None],
                 max_body: int) -> None:
        self._conn = conn
        self._release_to = release_to
        self._max_body = max_body
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
        """The whole body, or :class:`UpstreamBodyTooLarge` if it is longer than ``limit``
        bytes (default: the pool's ``max_body_bytes``); then the connection is closed and
        nothing of the body is returned. A body never comes back cut short."""
        cap = self._max_body if limit is None else limit
        if cap < 0:
            raise ValueError("limit must be >= 0")
        declared = self._conn.length
        if declared is not None and declared > cap:
            self.close()  # do not download what will be refused
            raise UpstreamBodyTooLarge(cap)
        parts: list[bytes] = []
        size = 0
        while chunk := await self._conn.readany():
            size += len(chunk)
            if size > cap:
                self.close()
                raise UpstreamBodyTooLarge(cap)
            parts.append(chunk)
        return b"".join(parts)

    def is_eof(self) -> bool:
        return self._conn.body_done and not self._conn._chunks

    def release(self) -> None:
        """Done with the response: pool the connection if it is clean, else close it."""
        if not self._released:
            self._released = True
            self._release_to(self._conn)

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._conn.close()

    def __del__(self) -> None:
        if getattr(self, "_released", True):  # released, or __init__ never finished
            return
        self._released = True
        conn = self._conn
        if conn.open:
            host, port = conn.origin[1], conn.origin[2]
            warnings.warn(f"upstream response from {host}:{port} was neither released "
                          "nor closed", ResourceWarning, source=self, stacklevel=1)
        with contextlib.suppress(RuntimeError):  # the event loop is already closed
            conn.close()
