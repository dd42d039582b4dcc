"""The per-request record that flows down the path and is logged once at the end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.observe.trace import Trace
    from hub.observe.usage import StreamTap, Usage
    from hub.routing.request import Choice, RouteRequest


@dataclass(slots=True)
class Call:
    request_id: str
    route: str  # OpenAI route below /v1, e.g. "/chat/completions"; or "/tokenize", "/api/chat"
    model: str = ""
    body: bytes = b""
    content_type: str = "application/json"  # of body (multipart for audio uploads)
    stream: bool = False
    tenant: str = "-"
    priority: str = "interactive"  # the request's class in the worker queue
    tier: str = "local"  # who answered: "local" workers or the "fallback" upstream
    cache: str | None = None  # response cache: "hit", "miss", "bypass"; None: not cached
    cache_record: int = 0  # > 0: keep up to this many bytes of the stream for the cache
    worker: str | None = None
    attempts: int = 0
    status: int = 0
    error: str | None = None  # error code, e.g. "upstream_timeout"
    ttft_s: float | None = None
    started: float = 0.0
    # -- accounting (hub.observe); loop times like ``started`` ----------------------
    trace: Trace | None = None  # W3C trace context: the hub's span of this request
    queued_at: float = 0.0  # parsed and checked: waiting (admission, capacity) starts
    sent_at: float = 0.0  # the first attempt went out to a worker: waiting ended
    first_token_at: float | None = None  # first token to the client (estimated for a
                                         # non-stream answer from the worker's timings)
    answered: bool = False  # a whole 200 answer went to the client
    usage: Usage | None = None  # token counts the worker reported (None: it did not)
    tap: StreamTap | None = None  # a relayed stream's last events and inter-token gaps
    route_req: RouteRequest | None = None  # the prompt key, when the policy uses one
    choice: Choice | None = None  # where the policy sent the call, and why
