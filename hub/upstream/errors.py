"""Transport-level failures of an upstream exchange (mapped to HubErrors by the proxy)."""

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
    """The worker closed the connection before any byte of a response."""


class UpstreamProtocolError(UpstreamTransportError):
    """The worker's answer is not valid HTTP/1.1 (the connection is closed, never reused)."""


class UpstreamBodyError(UpstreamTransportError):
    """The body ended before its declared end (connection lost mid-body)."""
