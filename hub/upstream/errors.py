"""Transport-level failures of an upstream exchange (mapped to HubErrors by the proxy).

Every class derives from :class:`UpstreamTransportError`, so a caller that catches
that one never lets a worker's misbehaviour escape as a crash. What each one says
about the request matters more than the name: only :class:`UpstreamClosedEarly`
and :class:`UpstreamConnectFailed` (and :class:`UpstreamInvalidRequest`) guarantee
that the worker cannot have acted on it.
"""

from __future__ import annotations


class UpstreamTransportError(Exception):
    """Anything that went wrong talking to a worker."""


class UpstreamConnectFailed(UpstreamTransportError):
    """No connection could be made (refused, unreachable, connect timeout)."""

    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


class UpstreamInvalidRequest(UpstreamTransportError, ValueError):
    """The request cannot be put on the wire (a URL or header the client cannot encode).

    Nothing was sent. It is a ValueError too: the fault is in the input, usually a
    worker's configured URL or API key, not in the worker.
    """


class UpstreamClosedEarly(UpstreamTransportError):
    """The connection closed before the whole request was written.

    A worker never acts on a request it did not receive in full, so this one is safe
    to send again; the pool does so once, on a fresh connection, when a reused one
    fails this way.
    """


class UpstreamClosedAfterSend(UpstreamTransportError):
    """The whole request was sent, then the worker closed without a response byte.

    The worker may have read the request and worked on it (then crashed, or was
    killed): sending it again could run the same prompt twice, so the pool never does.
    ``reused`` says whether it happened on a kept-alive connection (where a worker
    closing an idle connection at the same instant looks exactly the same).
    """

    def __init__(self, message: str, *, reused: bool) -> None:
        super().__init__(message)
        self.reused = reused


class UpstreamProtocolError(UpstreamTransportError):
    """The worker's answer is not valid HTTP/1.1 (the connection is closed, never reused)."""


class UpstreamBodyError(UpstreamTransportError):
    """The body ended before its declared end (connection lost mid-body)."""


class UpstreamBodyTooLarge(UpstreamTransportError):
    """The answer is longer than the reader's cap; nothing of it is returned.

    Not the worker's fault: another worker would most likely answer as much.
    """

    def __init__(self, limit: int) -> None:
        exact = f" ({limit} bytes)" if limit >= 1024 else ""
        super().__init__(f"the worker's answer is larger than the {_size(limit)} limit{exact}")
        self.limit = limit


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"
