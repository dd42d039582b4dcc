"""What a request-aware policy sees of a request, and what it answers.

``RouteRequest`` is built once by the API layer from the parsed body and headers, so a
policy never touches the aiohttp request. ``Choice`` carries the decision and its reason
to the response header, the log line and the metrics without being recomputed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hub.fleet.registry import Worker

# prefix-hit: sent where most of the prompt is probably cached
# prefix-miss: no worker has enough of it; placed by load, and remembered there
# session: the conversation's pinned worker (X-Session-ID / ``user``), still free
# repin: the pinned worker is gone or busy; pinned again to the worker chosen now
# load: the prompt's worker is too busy, or the request has no prompt: least loaded
Reason = Literal["prefix-hit", "prefix-miss", "session", "repin", "load"]
REASONS: tuple[Reason, ...] = ("prefix-hit", "prefix-miss", "session", "repin", "load")

SESSION_HEADER = "X-Session-ID"
MAX_SESSION_KEY = 128  # longer keys are kept as their digest: the session table stays small


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    blocks: tuple[int, ...] = ()  # hub.routing.prompt_key.prompt_blocks of the body
    session_key: str | None = None
    tenant: str = "-"


@dataclass(frozen=True, slots=True)
class Choice:
    worker: Worker
    reason: Reason
    matched: float = 0.0  # share of the prompt's blocks the worker had, before this request
    matched_blocks: int = 0  # the same as a count of leading blocks

    def header(self) -> str:
        """The value of ``X-Spokehub-Route``: ``prefix-hit; matched=0.83``."""
        return f"{self.reason}; matched={self.matched:.2f}"


def session_key_of(header: str | None, payload: Mapping[str, Any]) -> str | None:
    """The conversation a request belongs to, if the client says: the X-Session-ID
    header, else OpenAI's ``prompt_cache_key`` (meant for exactly this), else ``user``.

    Empty or non-string values are no key; keys longer than ``MAX_SESSION_KEY`` are
    replaced by a digest, so a client cannot grow the session table by sending long ones.
    """
    for value in (header, payload.get("prompt_cache_key"), payload.get("user")):
        if isinstance(value, str) and value:
            if len(value) > MAX_SESSION_KEY:
                data = value.encode("utf-8", "surrogatepass")
                return "#" + hashlib.blake2b(data, digest_size=16).hexdigest()
            return value
    return None
