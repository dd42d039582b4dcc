"""The response cache's second level in Redis, shared by every hub of a fleet: an
answer one hub's worker made is a hit at the others.

The process's own LRU (:mod:`hub.cache.store`) stays the first level. On a local miss
of a cacheable request :meth:`SharedCache.get` runs one ``GET``+``PTTL`` pipeline on
``<namespace>:rc:<hex key>`` under ``timeout_s`` (then it is a miss); a hit is stored
locally for what is left of its TTL. This is the request path's only Redis round trip
besides admission, and only for deterministic requests the local cache missed: the
alternative is a generation on a GPU. A fill is written with ``SET ... PX <ttl>`` in
the background, off the answer's path, by one writer task: fills that arrive while a
write is on the wire go out together in one pipeline (at most ``max_queued`` wait;
beyond that a fill stays local, counted ``skipped``).

The key is the request's peppered HMAC (:mod:`hub.cache.key`) in hex: it reveals
neither tenant nor prompt, and keeps tenants apart (the tenant is inside the HMAC). The
hubs must share the pepper (``response_cache.pepper_env``), or they never find each
other's entries. The value is ``<content type>\\n<body>``.

Outage: with the link down nothing is tried (a miss, counted ``skipped``); a failed
command marks the link down. A slow answer (over ``timeout_s``) is a miss, counted
``error``, without marking the link down: Redis is slow, not gone.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric

from hub.state.background import Background
from hub.state.redis_link import LINK_ERRORS

if TYPE_CHECKING:
    from hub.state.link import SharedLink

LOOKUP_RESULTS = ("hit", "miss", "error", "skipped")
STORE_RESULTS = ("stored", "error", "skipped")


class SharedCache:
    """The :class:`hub.cache.cache.SecondLevel` of a hub sharing its cache."""

    def __init__(self, link: SharedLink, *, timeout_s: Callable[[], float] = lambda: 0.1,
                 enabled: Callable[[], bool] = lambda: True,
                 max_entry_bytes: Callable[[], int] = lambda: 1 << 20,
                 max_queued: int = 1000) -> None:
        self.link = link
        self.timeout_s = timeout_s  # read per lookup: a reload may change them
        self.enabled = enabled
        self.max_entry_bytes = max_entry_bytes
        self.lookups: Counter[str] = Counter()  # result -> lookups
        self.stores: Counter[str] = Counter()  # result -> writes
        self.max_queued = max_queued  # fills waiting for the writer; more are dropped
        self._queue: list[tuple[str, bytes, int]] = []
        self._writing = False
        self._writes = Background()

    def rkey(self, key: bytes) -> str:
        return self.link.key("rc", key.hex())

    async def get(self, key: bytes) -> tuple[bytes, str, float] | None:
        if not self.enabled():
            return None
        if not self.link.up:
            self.lookups["skipped"] += 1
            return None
        try:
            async with asyncio.timeout(self.timeout_s()):
                pipe = self.link.client.pipeline(transaction=False)
                pipe.get(self.rkey(key))
                pipe.pttl(self.rkey(key))
                value, pttl = await pipe.execute()
        except TimeoutError:
            self.lookups["error"] += 1  # slow: a miss this time, the link stays up
            return None
        except LINK_ERRORS as exc:
            self.lookups["error"] += 1
            self.link.mark_down(exc)
            return None
        found = _decode(value, pttl)
        self.lookups["miss" if found is None else "hit"] += 1
        return found

    def put(self, key: bytes, body: bytes, content_type: str, ttl_s: float) -> None:
        if not self.enabled() or len(body) > self.max_entry_bytes():
            return
        if not self.link.up or len(self._queue) >= self.max_queued:
            self.stores["skipped"] += 1
            return
        value = content_type.encode() + b"\n" + body
        self._queue.append((self.rkey(key), value, max(1, int(ttl_s * 1000))))
        if not self._writing:
            self._writing = True
            self._writes.spawn(self._write(), "spokehub-shared-cache-set")

    async def _write(self) -> None:
        """One writer: what was queued meanwhile goes out in one pipeline, so a burst of
        fills takes one connection and a few round trips, not one each."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                pipe = self.link.client.pipeline(transaction=False)
                for rkey, value, ttl_ms in batch:
                    pipe.set(rkey, value, px=ttl_ms)
                try:
                    await pipe.execute()
                except LINK_ERRORS as exc:
                    self.stores["error"] += len(batch) + len(self._queue)
                    self._queue.clear()
                    self.link.mark_down(exc)
                    return
                self.stores["stored"] += len(batch)
        finally:
            self._writing = False

    async def drain(self) -> None:
        await self._writes.drain()

    async def aclose(self) -> None:
        await self._writes.stop()

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "spokehub_response_cache_shared_lookups",
            "Local response-cache misses looked up in the cache the hubs share (Redis), "
            "by result (skipped: Redis down; error: failed or slower than "
            "state.cache_lookup_timeout_s)", labels=["result"])
        for result in LOOKUP_RESULTS:
            lookups.add_metric([result], float(self.lookups[result]))
        yield lookups
        stores = CounterMetricFamily(
            "spokehub_response_cache_shared_stores",
            "Answers written to the cache the hubs share (Redis), by result",
            labels=["result"])
        for result in STORE_RESULTS:
            stores.add_metric([result], float(self.stores[result]))
        yield stores


def _decode(value: object, pttl: object) -> tuple[bytes, str, float] | None:
    if not isinstance(value, bytes) or not isinstance(pttl, int):
        return None
    content_type, sep, body = value.partition(b"\n")
    if not sep:
        return None
    ttl_s = pttl / 1000.0 if pttl > 0 else 0.0
    if ttl_s <= 0:  # expired between GET and PTTL, or stored without one
        return None
    return body, content_type.decode("latin-1"), ttl_s
