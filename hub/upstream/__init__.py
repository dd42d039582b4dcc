"""A small HTTP/1.1 client for the hot path: pooled keep-alive connections to workers.

aiohttp's client costs about 60 µs of CPU per request here, a quarter of the hub's
budget; the hub needs far less than it offers (POST a byte body, read a status,
two headers and a body as it arrives). Probes and other cold paths keep aiohttp.
"""

from hub.upstream.errors import (
    UpstreamBodyError,
    UpstreamClosedEarly,
    UpstreamConnectFailed,
    UpstreamProtocolError,
    UpstreamTransportError,
)
from hub.upstream.pool import Pool, Response

__all__ = [
    "Pool",
    "Response",
    "UpstreamBodyError",
    "UpstreamClosedEarly",
    "UpstreamConnectFailed",
    "UpstreamProtocolError",
    "UpstreamTransportError",
]
