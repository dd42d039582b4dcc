"""Small answers over :mod:`hub.upstream`: one request, a total timeout, a size cap.

What probes and the agent's calls to the hub need from an HTTP client: no redirects
are followed (a 3xx is an answer like any other), no proxy is consulted (workers are
local or on the fleet's own network), and an answer longer than its cap is refused
whole (:class:`AnswerTooLarge`), never cut off and then parsed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
from collections.abc import Iterable
from typing import Any

from hub.upstream import Pool, UpstreamConnectFailed, UpstreamTransportError

MIB = 1024 * 1024
# Status documents are a few KiB; a worker with hundreds of models or slots stays
# far below this.
MAX_ANSWER_BYTES = 4 * MIB
# Idle connections are kept a little longer than a usual probe or heartbeat
# interval; a server that closes one first costs a reconnect, which the pool does.
KEEPALIVE_S = 15.0

_ERRNO_RE = re.compile(r"\[Errno (\d+)\]")


class AnswerTooLarge(UpstreamTransportError):
    """The answer's body is longer than the caller's cap; none of it is used."""

    def __init__(self, limit: int) -> None:
        size = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
        super().__init__(f"answer over {size}")
        self.limit = limit


# What a request can fail with when there is no usable HTTP answer.
TRANSPORT_ERRORS = (UpstreamTransportError, TimeoutError, OSError)


def new_pool(urls: Iterable[str] = (), *, keepalive_s: float = KEEPALIVE_S) -> Pool:
    """A connection pool for small calls. A TLS context (the system's CA store) is
    loaded up front only if one of ``urls`` is https; otherwise on first need."""
    tls = ssl.create_default_context() if any(u.startswith("https:") for u in urls) else None
    return Pool(keepalive_s=keepalive_s, max_idle_per_origin=8, ssl_context=tls)


async def fetch(pool: Pool, method: str, url: str, *, timeout_s: float,
                connect_timeout_s: float | None = None, headers: dict[str, str] | None = None,
                body: bytes = b"", max_bytes: int = MAX_ANSWER_BYTES) -> tuple[int, bytes]:
    """(status, body) of one request, all of it within ``timeout_s``.

    Raises one of :data:`TRANSPORT_ERRORS` when there is no complete answer, including
    :class:`AnswerTooLarge` for a body over ``max_bytes``. Redirects are not followed.
    """
    connect_s = timeout_s if connect_timeout_s is None else min(connect_timeout_s, timeout_s)
    async with asyncio.timeout(timeout_s):
        resp = await pool.request(method, url, headers or {}, body, connect_s)
        try:
            declared = resp.header("content-length").strip()
            if declared.isdigit() and int(declared) > max_bytes:
                raise AnswerTooLarge(max_bytes)
            parts: list[bytes] = []
            size = 0
            while chunk := await resp.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise AnswerTooLarge(max_bytes)
                parts.append(chunk)
        except BaseException:
            resp.close()  # an unread rest must not stay on a pooled connection
            raise
        resp.release()  # pooled only if the body was read to its end
    return resp.status, b"".join(parts)


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def describe_error(exc: BaseException) -> str:
    """A short, stable description of a failed request (for details and logs)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, UpstreamConnectFailed):
        err = exc.os_error
        if err is None:
            return "timed out"  # the connect timeout
        return f"cannot connect: {_os_reason(err)}"
    if isinstance(exc, AnswerTooLarge):
        return str(exc)
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
