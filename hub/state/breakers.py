"""Breaker transitions shared by every hub: one hub's discovery of a failing worker
stops every hub's traffic to it within a pub/sub delivery (milliseconds).

When a breaker here opens, the hub publishes ``{"name", "state": "open",
"cooldown_s"}`` on the ``breaker`` channel and stores it as ``<ns>:breaker:<name>``
expiring with the cooldown (so a hub that reconnects, or starts, still learns of
breakers open now). Receivers force their own breaker for that worker open with the
same cooldown; after it, each hub probes with one half-open request as usual. A probe
that succeeds anywhere closes the breaker everywhere (``"state": "closed"`` and the
key is deleted); one that fails re-opens it with the grown cooldown, shared again.

Transitions a hub applies from the channel are not published again (no echo loop),
and a hub skips its own messages. Half-open is local: only one hub needs to probe,
but each may (at most one request per hub per cooldown).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from hub.fleet.registry import Registry
from hub.resilience.breaker import Breakers, State
from hub.state.background import Background
from hub.state.redis_link import RedisLink
from hub.state.wire import decode, encode, from_other_hub, number

log = logging.getLogger("spokehub.state")

CHANNEL = "breaker"
MAX_COOLDOWN_S = 24 * 3600.0


def parse_transition(doc: dict[str, Any]) -> tuple[str, State, float] | None:
    """(worker name, open or closed, cooldown) from a message; None if malformed."""
    name, state = doc.get("name"), doc.get("state")
    cooldown = number(doc, "cooldown_s") or 0.0
    if not isinstance(name, str) or not 0 < len(name) <= 256:
        return None
    if state == "open" and 0 < cooldown <= MAX_COOLDOWN_S:
        return name, State.OPEN, cooldown
    if state == "closed":
        return name, State.CLOSED, 0.0
    return None


class BreakerSync:
    def __init__(self, link: RedisLink, registry: Registry,
                 breakers: Callable[[], Breakers]) -> None:
        self.link = link
        self.registry = registry
        self.breakers = breakers  # read each time: a config reload replaces the set
        self._applying = False
        self._bg = Background()
        breakers().listeners.append(self.transition)
        link.subscribe(CHANNEL, self._received)
        link.on_resync_async(self.resync)

    def key(self, name: str) -> str:
        return self.link.key("breaker", name)

    # -- local transitions ---------------------------------------------------------------
    def transition(self, name: str, old: State, new: State) -> None:
        if self._applying or new is State.HALF_OPEN:
            return
        if not self.link.up:  # open ones are stored by the resync; closes are lost
            self.link.count_dropped(CHANNEL)
            return
        if new is State.OPEN:
            breaker = self.breakers().find(name)
            cooldown = breaker.cooldown_s if breaker is not None else 0.0
            if cooldown > 0:
                self._bg.spawn(self._share_open(name, cooldown), f"share breaker {name}")
        elif old is not State.CLOSED:
            self._bg.spawn(self._share_closed(name), f"share breaker {name}")

    async def _share_open(self, name: str, cooldown_s: float, ttl_s: float | None = None) -> None:
        body = encode(self.link.hub_id, {"name": name, "state": "open",
                                         "cooldown_s": cooldown_s})
        ttl_ms = max(1, math.ceil((cooldown_s if ttl_s is None else ttl_s) * 1000))
        await self._send(body, lambda pipe: pipe.set(self.key(name), body, px=ttl_ms))

    async def _share_closed(self, name: str) -> None:
        body = encode(self.link.hub_id, {"name": name, "state": "closed"})
        await self._send(body, lambda pipe: pipe.delete(self.key(name)))

    async def _send(self, body: bytes, write: Callable[[Any], object]) -> None:
        await self.link.write_and_publish(CHANNEL, write, body)

    # -- remote transitions --------------------------------------------------------------
    def _received(self, payload: bytes) -> None:
        doc = decode(payload)
        if doc is None or not from_other_hub(doc, self.link.hub_id):
            return
        parsed = parse_transition(doc)
        if parsed is not None:
            name, state, cooldown = parsed
            self.apply(name, state, cooldown, str(doc.get("hub")))

    def apply(self, name: str, state: State, cooldown_s: float, hub: str,
              retry_in_s: float | None = None) -> None:
        if self.registry.get(name) is None:  # not a worker here: make no breaker for it
            return
        breaker = self.breakers().get(name)
        self._applying = True
        try:
            if state is State.OPEN:
                changed = breaker.force_open(cooldown_s, retry_in_s)
            else:
                changed = breaker.force_close()
        finally:
            self._applying = False
        if changed:
            log.warning("worker %s: breaker %s (shared from hub %s)", name, state, hub)

    # -- after a (re)connect -------------------------------------------------------------
    async def resync(self) -> None:
        """Open here what is open elsewhere now; store what opened here meanwhile."""
        client = self.link.client
        keys = [k async for k in client.scan_iter(match=self.key("*"), count=500)]
        stored: set[str] = set()
        if keys:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            answers = await pipe.execute()
            for value, ttl_ms in zip(answers[::2], answers[1::2], strict=True):
                doc = decode(value)
                parsed = parse_transition(doc) if doc is not None else None
                if parsed is None or parsed[1] is not State.OPEN or not ttl_ms or ttl_ms <= 0:
                    continue
                name, _, cooldown = parsed
                stored.add(name)
                self.apply(name, State.OPEN, cooldown, str(doc.get("hub") if doc else ""),
                           retry_in_s=ttl_ms / 1000)
        breakers = self.breakers()
        for breaker in breakers:
            left = breaker.snapshot().get("retry_in_s")
            if (breaker.state is State.OPEN and breaker.name not in stored
                    and isinstance(left, float) and left > 0):
                await self._share_open(breaker.name, breaker.cooldown_s, ttl_s=left)

    async def stop(self) -> None:
        listeners = self.breakers().listeners
        if self.transition in listeners:
            listeners.remove(self.transition)
        await self._bg.stop()
