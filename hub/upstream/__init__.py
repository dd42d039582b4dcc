"""A small, strict HTTP/1.1 client for the hot path: pooled keep-alive connections to workers.

This package owns the hub's (and the agent's) conversation with a worker over HTTP/1.1:
encoding a request from a checked URL (:mod:`.url`), parsing the answer strictly and
deciding where it ends (:mod:`.http1`), one exchange per connection at a time with
backpressure (:mod:`.connection`), reading bodies with a cap (:mod:`.response`), and
deciding when a kept-alive connection may be reused and when a request may be sent
again (:mod:`.pool`); every failure is an :class:`UpstreamTransportError` subclass
(:mod:`.errors`). It must import nothing but the standard library and its own modules:
the agent imports it and must not pull in aiohttp, and nothing here knows about
routing, breakers, configs or metrics (callers pass settings in and read ``Pool.stats``).
aiohttp's client costs about 60 µs of CPU per request, a quarter of the hub's budget,
and offers far more than the hub needs; probes and other cold paths keep aiohttp.
"""

from hub.upstream.errors import (
    UpstreamBodyError,
    UpstreamBodyTooLarge,
    UpstreamClosedAfterSend,
    UpstreamClosedEarly,
    UpstreamConnectFailed,
    UpstreamInvalidRequest,
    UpstreamProtocolError,
    UpstreamTransportError,
)
from hub.upstream.pool import KEEPALIVE_S, MAX_BODY, Pool, PoolStats
from hub.upstream.response import Response
from hub.upstream.url import check_url

__all__ = [
    "KEEPALIVE_S",
    "MAX_BODY",
    "Pool",
    "PoolStats",
    "Response",
    "UpstreamBodyError",
    "UpstreamBodyTooLarge",
    "UpstreamClosedAfterSend",
    "UpstreamClosedEarly",
    "UpstreamConnectFailed",
    "UpstreamInvalidRequest",
    "UpstreamProtocolError",
    "UpstreamTransportError",
    "check_url",
]
