"""The agent's HTTP client: the hub's small HTTP/1.1 pool, one call at a time.

The agent makes a handful of small requests per heartbeat, so it uses
:mod:`hub.upstream` (standard library only) instead of aiohttp, whose import alone
would double the daemon's memory. Proxy variables (``HTTP_PROXY`` and friends) are
never consulted: local workers must not be reached through a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable

from agent import __version__
from hub.upstream import Pool, UpstreamConnectFailed, UpstreamTransportError

USER_AGENT = f"spokehub-agent/{__version__}"
# Keep idle connections a little longer than the longest usual heartbeat; a server
# that closes one first costs a reconnect, which the pool does by itself.
KEEPALIVE_S = 15.0
# Status documents are a few KiB; anything past this is cut off (and so unreadable).
MAX_BODY = 8 * 1024 * 1024

# What a request can fail with when there is no usable HTTP answer.
TRANSPORT_ERRORS = (UpstreamTransportError, TimeoutError, OSError)

_ERRNO_RE = re.compile(r"\[Errno (\d+)\]")


def new_pool(urls: Iterable[str] = ()) -> Pool:
    """A connection pool for the hub and the local workers. A TLS context (the
    system's CA store) is loaded only if one of ``urls`` is https."""
    tls = ssl.create_default_context() if any(u.startswith("https:") for u in urls) else None
    return Pool(keepalive_s=KEEPALIVE_S, max_idle_per_origin=8, ssl_context=tls)


@contextlib.asynccontextmanager
async def open_pool(urls: Iterable[str] = ()) -> AsyncIterator[Pool]:
    """:func:`new_pool`, closing its idle connections on exit."""
    pool = new_pool(urls)
    try:
        yield pool
    finally:
        pool.close()
        await asyncio.sleep(0)  # let the transports finish closing


async def fetch(pool: Pool, method: str, url: str, *, timeout_s: float,
                connect_timeout_s: float | None = None, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, bytes]:
    """(status, body) of one request, all of it within ``timeout_s``.

    Raises one of :data:`TRANSPORT_ERRORS` when there is no complete answer. Redirects
    are not followed. A body longer than :data:`MAX_BODY` is cut off there.
    """
    connect_s = timeout_s if connect_timeout_s is None else min(connect_timeout_s, timeout_s)
    async with asyncio.timeout(timeout_s):
        resp = await pool.request(method, url, {"User-Agent": USER_AGENT, **(headers or {})},
                                  body, connect_s)
        try:
            data = await resp.read(MAX_BODY)
        except BaseException:
            resp.close()
            raise
        resp.release()  # pooled only if the body was read to its end
    return resp.status, data


def describe_error(exc: BaseException) -> str:
    """A short, stable description of a network failure (for state-change logs)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, UpstreamConnectFailed):
        err = exc.os_error
        if err is None:
            return "timed out"  # the connect timeout
        return f"cannot connect: {_os_reason(err)}"
    return type(exc).__name__


def _os_reason(err: OSError) -> str:
    if isinstance(err, socket.gaierror) and err.strerror:
        return err.strerror  # name resolution: "Name or service not known"
    if err.errno and err.errno > 0:
        return os.strerror(err.errno)
    # Several addresses all failed (e.g. localhost as ::1 and 127.0.0.1): asyncio
    # folds them into one error without an errno; report the reason if they agree.
    codes = set(_ERRNO_RE.findall(str(err)))
    if len(codes) == 1:
        return os.strerror(int(codes.pop()))
    return type(err).__name__
