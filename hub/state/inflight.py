"""Per-worker in-flight counts shared by the hubs, so that together they respect a
worker's ``max_concurrency`` without a Redis round trip per request.

Each hub publishes the in-flight counts of its workers that have ``max_concurrency``
(the only ones whose count limits anything), as one message holding its whole view:
at most every ``interval_s`` (50 ms) when a count changed, and every ``heartbeat_s``
(0.5 s) anyway. Every hub keeps the other hubs' last messages and sets each worker's
``remote_in_flight`` to their sum; ``Worker.routable`` (and so
``Registry.saturated``, the hub's capacity queue and ``hub.routing.load``) counts it
with the hub's own. A hub whose messages stop for ``expire_s`` (2 s: crashed, cut off)
no longer counts. When other hubs' requests finish, this hub's capacity queue is woken
as it is for its own.

Overshoot bound: a hub sees another's count at most ``interval_s`` plus one pub/sub
delivery late, so a worker can run more than ``max_concurrency`` requests only by the
requests other hubs started on it within that window (a burst landing on several hubs
at once), and never more than ``hubs x max_concurrency``; the excess waits in the
worker's own queue, it is not refused. A hard cap would need a Redis round trip per
request and per release, on the path that must not wait on Redis.

Outage: publishing is dropped while the link is down and other hubs' counts expire
after ``expire_s``: each hub then limits with its own count only (fails open). After a
resync the hub publishes at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from hub.fleet.registry import Worker
from hub.state.background import Ticker
from hub.state.link import SharedLink

log = logging.getLogger("spokehub.state")

CHANNEL = "inflight"


def own_counts(workers: Iterable[Worker]) -> dict[str, int]:
    """This hub's in-flight requests on each worker that has ``max_concurrency`` (the
    workers left out count as 0)."""
    return {w.name: w.in_flight for w in workers
            if w.spec.max_concurrency > 0 and w.in_flight > 0}


class InflightShare:
    def __init__(self, link: SharedLink, workers: Callable[[], Iterable[Worker]], *,
                 on_room: Callable[[int], None] = lambda freed: None,
                 clock: Callable[[], float] = time.monotonic, interval_s: float = 0.05,
                 heartbeat_s: float = 0.5, expire_s: float = 2.0) -> None:
        self.link = link
        self._workers = workers
        self._on_room = on_room  # other hubs freed this many slots: wake waiters
        self._clock = clock
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.expire_s = expire_s
        self._sent: dict[str, int] | None = None  # last published; None: publish now
        self._sent_at = 0.0
        self._others: dict[str, tuple[dict[str, int], float]] = {}  # hub -> counts, seen
        self._ticker = Ticker(self.tick, lambda: self.interval_s, "shared in-flight counts")
        self.received = 0
        link.subscribe(CHANNEL, self.receive)
        link.on_resync(self.resync)

    # -- decisions (sync) ------------------------------------------------------------
    def outgoing(self, now: float) -> bytes | None:
        """The message to publish now, if any: the counts changed, or a heartbeat is due."""
        counts = own_counts(self._workers())
        if counts == self._sent and now - self._sent_at < self.heartbeat_s:
            return None
        self._sent, self._sent_at = counts, now
        return json.dumps({"hub": self.link.hub_id, "n": counts},
                          separators=(",", ":")).encode()

    def receive(self, payload: bytes) -> None:
        """Another hub's counts (this hub's own messages are skipped)."""
        try:
            doc = json.loads(payload)
            hub, counts = doc["hub"], doc["n"]
            if not isinstance(hub, str) or not isinstance(counts, dict):
                raise ValueError("bad shape")
            clean = {str(k): int(v) for k, v in counts.items() if int(v) > 0}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("shared in-flight counts: bad message ignored (%s)", exc)
            return
        if hub == self.link.hub_id:
            return
        self.received += 1
        now = self._clock()
        if clean:
            self._others[hub] = (clean, now)
        else:
            self._others.pop(hub, None)
        self.apply(now)

    def remote_counts(self, now: float) -> dict[str, int]:
        """Other hubs' in-flight requests per worker, from their fresh messages."""
        stale = [h for h, (_, seen) in self._others.items() if now - seen > self.expire_s]
        for hub in stale:
            del self._others[hub]
        totals: dict[str, int] = {}
        for counts, _ in self._others.values():
            for name, n in counts.items():
                totals[name] = totals.get(name, 0) + n
        return totals

    def apply(self, now: float) -> None:
        """Set each worker's ``remote_in_flight``; wake waiters for the slots freed."""
        totals: Mapping[str, int] = self.remote_counts(now)
        freed = 0
        for w in self._workers():
            new = totals.get(w.name, 0) if w.spec.max_concurrency > 0 else 0
            if new < w.remote_in_flight:
                freed += w.remote_in_flight - new
            w.remote_in_flight = new
        if freed:
            self._on_room(freed)

    def resync(self) -> None:
        """Redis is back (or this hub just joined): publish at the next tick."""
        self._sent = None

    # -- I/O -------------------------------------------------------------------------
    async def tick(self) -> None:
        now = self._clock()
        if self._others:
            self.apply(now)  # expire hubs gone quiet
        payload = self.outgoing(now)
        if payload is not None and self.link.up:
            await self.link.publish(CHANNEL, payload)
        elif payload is not None:
            self._sent = None  # not sent: try again when the link is back

    def start(self) -> None:
        self._ticker.start()

    async def aclose(self) -> None:
        """Stop; tell the other hubs this hub runs nothing any more."""
        await self._ticker.aclose()
        if self.link.up:
            await self.link.publish(CHANNEL, json.dumps(
                {"hub": self.link.hub_id, "n": {}}).encode())
        for w in self._workers():
            w.remote_in_flight = 0
