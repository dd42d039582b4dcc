"""The cache-aware routing's prefix map shared by the hubs, so that turn 2 of a
conversation that reaches hub B still finds the worker hub A sent turn 1 to.

When a worker gives a good answer under ``cache_aware``, the policy's ``on_served`` hook
queues (worker, namespace, block hashes, session digest); every ``interval_s`` (50 ms)
the queue goes out as one message. Only hashes travel: the prompt key's 64-bit block
hashes, the namespace (model, and tenant unless ``share_across_tenants``) and a digest
of the session key; never prompt text. Every other hub ``adopt``s each entry: the blocks
go into its own prefix index for that worker and the session is pinned there, as if it
had served the request itself. Routing itself stays local: no Redis on the request path.

Entries for workers a hub does not know are skipped (each hub's index is bounded per
worker it knows). Hubs must hash prompts alike (same ``routing.cache_aware.block_chars``
and ``share_across_tenants``) for the entries to match; otherwise they just never hit.

Outage: entries queued while the link is down are dropped; each hub keeps routing on its
own map. Resync: nothing to do: the map is a cache of recent answers and refills with
the next turns. A worker's cache loss (down, restarted) is seen by every hub's own
health checks, which ``forget`` the worker locally.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable

from hub.routing.base import Policy
from hub.routing.cache_aware import CacheAware
from hub.state.background import Ticker
from hub.state.link import SharedLink

log = logging.getLogger("spokehub.state")

CHANNEL = "prefixes"
MAX_PENDING = 1024  # entries per message; more in one interval are dropped (oldest kept)

Entry = tuple[str, str, tuple[int, ...], str | None]  # worker, namespace, blocks, session


def pack_blocks(blocks: tuple[int, ...]) -> str:
    return struct.pack(f"<{len(blocks)}Q", *blocks).hex()


def unpack_blocks(text: str) -> tuple[int, ...]:
    raw = bytes.fromhex(text)
    if len(raw) % 8:
        raise ValueError("block hashes must be 8 bytes each")
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


class PrefixShare:
    def __init__(self, link: SharedLink, policy: Callable[[], Policy | None],
                 known: Callable[[str], bool], *, interval_s: float = 0.05) -> None:
        self.link = link
        self._policy = policy  # the current policy: a reload may build a new one
        self._known = known  # a worker this hub has
        self.interval_s = interval_s
        self._pending: dict[Entry, None] = {}
        self._hooked: CacheAware | None = None
        self._ticker = Ticker(self.tick, lambda: self.interval_s, "shared prefix map")
        self.adopted = 0
        self.dropped = 0
        link.subscribe(CHANNEL, self.receive)
        self.hook()

    def hook(self) -> None:
        """Put ``on_served`` on the current cache-aware policy (again after a reload)."""
        policy = self._policy()
        if isinstance(policy, CacheAware) and policy is not self._hooked:
            policy.on_served = self.queue
            self._hooked = policy

    def queue(self, worker: str, namespace: str, blocks: tuple[int, ...],
              session: str | None) -> None:
        if not blocks:
            return
        entry = (worker, namespace, blocks, session)
        pending = self._pending
        if entry in pending:
            return
        if len(pending) >= MAX_PENDING:
            self.dropped += 1
            return
        pending[entry] = None

    def outgoing(self) -> bytes | None:
        """The queued entries as one message (and the queue emptied)."""
        if not self._pending:
            return None
        entries = [[w, ns, s, pack_blocks(b)] for w, ns, b, s in self._pending]
        self._pending.clear()
        return json.dumps({"hub": self.link.hub_id, "e": entries},
                          separators=(",", ":")).encode()

    def receive(self, payload: bytes) -> None:
        """Another hub's answers: into this hub's prefix index and session pins."""
        try:
            doc = json.loads(payload)
            hub, raw = doc["hub"], doc["e"]
            if not isinstance(raw, list):
                raise ValueError("bad shape")
            if hub == self.link.hub_id:
                return
            entries: list[Entry] = []
            for worker, namespace, session, blocks in raw:
                if not (isinstance(worker, str) and isinstance(namespace, str)
                        and (session is None or isinstance(session, str))
                        and isinstance(blocks, str)):
                    raise ValueError("bad entry")
                entries.append((worker, namespace, unpack_blocks(blocks), session))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("shared prefix map: bad message ignored (%s)", exc)
            return
        policy = self._policy()
        if not isinstance(policy, CacheAware):
            return
        for worker, namespace, blocks, session in entries:
            if blocks and self._known(worker):
                policy.adopt(worker, namespace, blocks, session)
                self.adopted += 1

    async def tick(self) -> None:
        self.hook()
        payload = self.outgoing()
        if payload is None:
            return
        if self.link.up:
            await self.link.publish(CHANNEL, payload)
        else:
            self.dropped += 1

    def start(self) -> None:
        self._ticker.start()

    async def aclose(self) -> None:
        await self._ticker.aclose()
        if self._hooked is not None and self._hooked.on_served == self.queue:
            self._hooked.on_served = None
        self._hooked = None
