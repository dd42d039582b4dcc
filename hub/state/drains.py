"""Drain flags shared by every hub: a drain (or undrain) at one hub applies at all.

Redis holds one hash, ``<ns>:drain``: worker name -> ``{"draining", "at", "hub"}``.
A change is written there and published on the ``drain`` channel; every hub applies
the newest flag per worker (``at``, wall clock) to its own registry, also to a worker
that only appears later (an agent's worker registered after the drain). While Redis
is down a change applies locally and is remembered; on resync the newer of the local
and the stored flag wins, so the last operator action wins across an outage too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.fleet.registry import Registry, Worker
from hub.state.background import Background
from hub.state.redis_link import RedisLink
from hub.state.wire import decode, encode, from_other_hub, number

log = logging.getLogger("spokehub.state")

CHANNEL = "drain"
MAX_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class DrainFlag:
    draining: bool
    at: float  # wall clock of the operator's action
    hub: str  # the hub that took it


def parse_flag(doc: dict[str, Any]) -> tuple[str, DrainFlag] | None:
    """(worker name, flag) from a stored or published record; None if malformed."""
    name, draining, at, hub = doc.get("name"), doc.get("draining"), number(doc, "at"), \
        doc.get("hub")
    if (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS
            or not isinstance(draining, bool) or at is None or not isinstance(hub, str)):
        return None
    return name, DrainFlag(draining, at, hub)


def newer(mine: DrainFlag | None, theirs: DrainFlag) -> bool:
    """Does ``theirs`` replace ``mine``? Later action wins; ties go to the hub id, so
    every hub picks the same one."""
    if mine is None:
        return True
    return (theirs.at, theirs.hub) > (mine.at, mine.hub)


class DrainSync:
    def __init__(self, link: RedisLink, registry: Registry,
                 clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.registry = registry
        self.clock = clock
        self.flags: dict[str, DrainFlag] = {}
        self.pending: set[str] = set()  # changed here while Redis was down
        self._applying = False
        self._bg = Background()
        registry.on_drain.append(self._local_change)
        registry.on_add.append(self._worker_added)
        link.subscribe(CHANNEL, self._received)
        link.on_resync_async(self.resync)

    @property
    def hash_key(self) -> str:
        return self.link.key("drain")

    # -- local changes -----------------------------------------------------------------
    def _local_change(self, worker: Worker) -> None:
        if self._applying:
            return
        flag = DrainFlag(worker.draining, self.clock(), self.link.hub_id)
        self.flags[worker.name] = flag
        self.pending.add(worker.name)
        if self.link.up:
            self._bg.spawn(self._write(worker.name, flag), f"share drain {worker.name}")
        else:
            self.link.count_dropped(CHANNEL)

    async def _write(self, name: str, flag: DrainFlag) -> None:
        body = self._record(name, flag)
        if not await self.link.write_and_publish(
                CHANNEL, lambda pipe: pipe.hset(self.hash_key, name, body), body):
            return
        if self.flags.get(name) == flag:
            self.pending.discard(name)

    def _record(self, name: str, flag: DrainFlag) -> bytes:
        return encode(flag.hub, {"name": name, "draining": flag.draining, "at": flag.at})

    # -- remote changes ----------------------------------------------------------------
    def _received(self, payload: bytes) -> None:
        doc = decode(payload)
        if doc is None or not from_other_hub(doc, self.link.hub_id):
            return
        parsed = parse_flag(doc)
        if parsed is not None:
            self._adopt(*parsed)

    def _adopt(self, name: str, flag: DrainFlag) -> None:
        if not newer(self.flags.get(name), flag):
            return
        self.flags[name] = flag
        self.pending.discard(name)
        worker = self.registry.get(name)
        if worker is not None:
            self._apply(worker, flag)

    def _apply(self, worker: Worker, flag: DrainFlag) -> None:
        if worker.draining == flag.draining:
            return
        self._applying = True
        try:
            self.registry.set_draining(worker, flag.draining)
        finally:
            self._applying = False
        log.warning("worker %s %s (shared from hub %s)", worker.name,
                    "draining" if flag.draining else "back in rotation", flag.hub)

    def _worker_added(self, worker: Worker) -> None:
        flag = self.flags.get(worker.name)
        if flag is not None and flag.draining:
            self._apply(worker, flag)

    # -- after a (re)connect -----------------------------------------------------------
    async def resync(self) -> None:
        """Adopt stored flags newer than ours; write ours that are newer (changed here
        while Redis was down, or lost with a Redis restart)."""
        raw = await self.link.client.hgetall(self.hash_key)
        stored: dict[str, DrainFlag] = {}
        for value in raw.values():
            doc = decode(value)
            parsed = parse_flag(doc) if doc is not None else None
            if parsed is not None:
                stored[parsed[0]] = parsed[1]
        for name, flag in stored.items():
            self._adopt(name, flag)
        for name, flag in list(self.flags.items()):
            theirs = stored.get(name)
            if theirs is None or newer(theirs, flag):
                await self._write(name, flag)
        self.pending.clear()

    async def stop(self) -> None:
        await self._bg.stop()
