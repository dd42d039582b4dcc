"""The response cache as the request path sees it: plan a request, answer a hit, fill
from a miss.

``routes._inference`` calls :meth:`ResponseCache.plan` once the request is
authenticated, parsed and capped (the key is over the body the worker would get) and
before admission: a hit is answered there, never reaching admission, routing or a
worker. Admission shares worker capacity and tokens among tenants, and a hit uses
neither; the tenant's rate is still counted for every miss. After a worker's answer,
:meth:`fill` stores it if it is a whole 200 answer the cache can replay.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from hub.cache.assemble import RecordingTap, assemble
from hub.cache.config import ResponseCacheConfig
from hub.cache.header import BYPASS, HIT, MISS
from hub.cache.key import cache_key, canonical_body
from hub.cache.policy import BYPASS_REASONS, decide
from hub.cache.replay import replayable
from hub.cache.store import Entry, Store
from hub.forward.call import Call

log = logging.getLogger("spokehub.cache")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
RECORD_FACTOR = 4  # a stream's events take a few times its answer's bytes


class SecondLevel(Protocol):
    """A cache behind this process's store, shared with other hubs
    (:class:`hub.state.shared_cache.SharedCache`). ``get`` answers within a short
    timeout, a miss on any failure; ``put`` returns at once (the write runs beside)."""

    async def get(self, key: bytes) -> tuple[bytes, str, float] | None:
        ...  # (body, content type, seconds it is still served)

    def put(self, key: bytes, body: bytes, content_type: str, ttl_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """What the cache does for one request: ``entry`` is the hit, if any; ``key`` is
    where its answer is stored, None if it is not to be stored."""

    key: bytes | None
    entry: Entry | None


class ResponseCache:
    def __init__(self, cfg: ResponseCacheConfig, pepper: bytes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.pepper = pepper
        self.store = Store(cfg.max_bytes, cfg.max_entry_bytes, cfg.ttl_s, clock)
        self.bypasses = dict.fromkeys(BYPASS_REASONS, 0)
        self.stored = 0
        self.remote: SecondLevel | None = None  # set when hubs share the cache

    @classmethod
    def build(cls, cfg: ResponseCacheConfig,
              old: ResponseCache | None = None) -> ResponseCache | None:
        """The cache for ``cfg`` (None when disabled), keeping ``old``'s entries and
        counts if its pepper is the same. Raises ConfigError for a missing pepper."""
        if not cfg.enabled:
            return None
        pepper = cfg.pepper()
        if old is None or old.pepper != pepper:
            return cls(cfg, pepper)
        old.cfg = cfg
        old.store.resize(cfg.max_bytes, cfg.max_entry_bytes, cfg.ttl_s)
        return old

    def plan(self, call: Call, payload: dict[str, Any],
             headers: Mapping[str, str]) -> Plan | None:
        """Decide, key and look up; sets ``call.cache``. None: the route is not cached."""
        decision = decide(self.cfg, call.route, payload, headers)
        if decision is None:
            return None
        if decision.reason is not None:
            self.bypasses[decision.reason] += 1
            call.cache = BYPASS
        if not decision.read and not decision.write:
            return Plan(None, None)
        key = cache_key(self.pepper, call.tenant, call.route, call.model,
                        canonical_body(payload))
        if call.stream:
            call.cache_record = RECORD_FACTOR * self.store.max_entry_bytes
        if not decision.read:
            return Plan(key, None)
        entry = self.store.get(key)
        call.cache = MISS if entry is None else HIT
        return Plan(key, entry)

    async def look_further(self, plan: Plan, call: Call) -> Plan:
        """A local miss asks the shared level (other hubs' answers), when there is one;
        a hit there is stored here too and answered like a local hit."""
        remote = self.remote
        if remote is None or plan.key is None or plan.entry is not None or \
                call.cache != MISS:
            return plan
        found = await remote.get(plan.key)
        if found is None:
            return plan
        body, content_type, ttl_s = found
        self.store.put(plan.key, body, content_type, ttl_s)
        call.cache = HIT
        return Plan(None, Entry(body, content_type, 0.0, 0))

    def _stored(self, key: bytes, body: bytes, content_type: str) -> None:
        self.stored += 1
        if self.remote is not None:
            self.remote.put(key, body, content_type, self.store.ttl_s)

    def fill(self, plan: Plan, call: Call, response: web.StreamResponse) -> None:
        """Store a worker's whole 200 JSON answer, or the whole answer a relayed stream
        spelled out (``assemble``), under the plan's key."""
        key = plan.key
        if key is None or not call.answered or response.status != 200:
            return
        if not isinstance(response, web.Response):
            self._fill_stream(key, call)
            return
        body = response.body
        if not isinstance(body, bytes) or len(body) > self.store.max_entry_bytes:
            if isinstance(body, bytes):
                self.store.too_large += 1
            return
        content_type = response.headers.get("Content-Type", "application/json")
        if not content_type.startswith("application/json"):
            return
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return
        if replayable(call.route, doc) and self.store.put(key, body, content_type):
            self._stored(key, body, content_type)

    def _fill_stream(self, key: bytes, call: Call) -> None:
        tap = call.tap
        if not isinstance(tap, RecordingTap) or tap.events is None:
            return
        doc = assemble(call.route, b"".join(tap.events), call.usage)
        if doc is None or not replayable(call.route, doc):
            return
        body = _dumps(doc).encode("utf-8", "surrogatepass")
        if self.store.put(key, body, "application/json"):
            self._stored(key, body, "application/json")

    def __repr__(self) -> str:
        return f"<ResponseCache {self.store!r}>"
