"""Which requests the response cache may answer or store: pure decisions, no I/O.

A request is **deterministic** (cacheable) when the same body gives the same answer:

- its route is one of ``response_cache.routes``; embeddings have no sampling, so every
  embeddings request is deterministic;
- ``temperature`` is 0, or absent while ``response_cache.default_temperature`` is 0
  (workers differ: llama.cpp defaults to 0.8, OpenAI to 1; by default an absent
  temperature is not known to be 0, so the request is not cached);
- ``n`` (and ``best_of`` on /completions) absent or 1;
- no ``tools``, ``functions``, ``tool_choice`` or ``function_call``: a tool call's
  answer feeds actions, and its arguments are not worth serving stale.

``seed``, ``top_p``, ``logprobs`` and the rest stay in the keyed body: with temperature
0 they do not make answers vary, and a different value is a different entry.

``Cache-Control`` on the request: ``no-store`` neither reads nor writes the cache;
``no-cache`` skips the lookup but stores the fresh answer (HTTP's meaning: revalidate
with the origin). Either way the answer says ``X-Spokehub-Cache: bypass``, as does a
non-deterministic request on a cached route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.cache.config import ResponseCacheConfig

_TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call")

# Why a request on a cached route was not looked up (metric label values).
NONDETERMINISTIC = "nondeterministic"
NO_CACHE = "no_cache"
NO_STORE = "no_store"
BYPASS_REASONS = (NONDETERMINISTIC, NO_CACHE, NO_STORE)


@dataclass(frozen=True, slots=True)
class Decision:
    """``read``: look the request up; ``write``: store its answer; ``reason``: why not
    read (None when it reads)."""

    read: bool
    write: bool
    reason: str | None = None


def _one(payload: Mapping[str, Any], field: str) -> bool:
    value = payload.get(field)
    return value is None or (type(value) is int and value == 1)


def _zero(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def deterministic(route: str, payload: Mapping[str, Any],
                  default_temperature: float | None) -> bool:
    """True if the same body always gets the same answer (see the module doc)."""
    if route == "/embeddings":
        return True
    temperature = payload.get("temperature")
    if temperature is None:
        if default_temperature is None or default_temperature != 0:
            return False
    elif not _zero(temperature):
        return False
    if not _one(payload, "n") or (route == "/completions" and not _one(payload, "best_of")):
        return False
    return all(payload.get(f) is None for f in _TOOL_FIELDS)


def cache_control(headers: Mapping[str, str]) -> frozenset[str]:
    """The request's Cache-Control directives, lower-cased, without arguments."""
    value = headers.get("Cache-Control")
    if not value:
        return frozenset()
    return frozenset(d.split("=", 1)[0].strip().lower() for d in value.split(","))


def decide(cfg: ResponseCacheConfig, route: str, payload: Mapping[str, Any],
           headers: Mapping[str, str]) -> Decision | None:
    """What the cache does with this request; None if its route is not cached at all
    (the answer then carries no ``X-Spokehub-Cache`` header)."""
    if route not in cfg.routes:
        return None
    if not deterministic(route, payload, cfg.default_temperature):
        return Decision(read=False, write=False, reason=NONDETERMINISTIC)
    directives = cache_control(headers)
    if "no-store" in directives:
        return Decision(read=False, write=False, reason=NO_STORE)
    if "no-cache" in directives:
        return Decision(read=False, write=True, reason=NO_CACHE)
    return Decision(read=True, write=True)
