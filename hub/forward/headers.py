"""The headers that say who answered a call and how: one place for a worker's whole
answer, its stream and an answer from the response cache."""

from __future__ import annotations

from hub.cache.header import cache_header
from hub.forward.call import Call
from hub.forward.placement import route_header


def answer_headers(call: Call, content_type: str, worker: str | None) -> dict[str, str]:
    """Content type, request id, the worker and tier (None: no worker answered, as for
    a cache hit), the routing reason, what the cache did, and the trace id."""
    headers = {"Content-Type": content_type, "X-Request-ID": call.request_id}
    if worker is not None:
        headers["X-Spokehub-Worker"] = worker
        headers["X-Spokehub-Tier"] = call.tier
    headers.update(route_header(call))
    headers.update(cache_header(call))
    if call.trace is not None:
        headers["X-Trace-Id"] = call.trace.trace_id
    return headers
