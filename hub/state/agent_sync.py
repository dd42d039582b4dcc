"""Agent-registered workers shared by every hub: a heartbeat accepted by any hub
registers its workers at all of them.

Each accepted heartbeat becomes a *report* (see :mod:`hub.fleet.agents`): it is
stored as ``<ns>:agent:<agent_id>`` (expiring after ``agents.remove_after_s``, like
the worker itself) and published on the ``agents`` channel. Every hub applies reports
from the others with :meth:`AgentBook.apply_shared`, which checks them like a
heartbeat, with the same TTL and expiry rules (``last_seen`` travels with the report).
A deregistration is published as ``{"op": "del"}`` and deletes the key.

On (re)connect, a hub reads every stored report (SCAN) and applies those newer than
its own, then stores its own reports that are newer than the stored ones: heartbeats
it took while Redis was down, or everything, if Redis restarted empty. What this
cannot recover: a deregistration made at another hub during the outage (the agent
comes back here until its TTL passes, unless it heartbeats elsewhere), and agent
workers restored from a state file (no report: shared again at their next heartbeat).

While Redis is down, workers of agents last heard through another hub neither go
stale nor are removed here (their heartbeats cannot arrive): the hub serves from its
last snapshot, and its own probes and breakers still guard them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from hub.fleet.agents import AgentBook
from hub.state.background import Background
from hub.state.redis_link import RedisLink
from hub.state.wire import decode, encode, from_other_hub, number

log = logging.getLogger("spokehub.state")

CHANNEL = "agents"
MGET_BATCH = 200


class AgentSync:
    def __init__(self, link: RedisLink, book: AgentBook) -> None:
        self.link = link
        self.book = book
        self._bg = Background()
        book.on_report.append(self._reported)
        book.hold_shared = lambda: not link.up  # outage: keep what other hubs reported
        book.on_deregister.append(self._deregistered)
        link.subscribe(CHANNEL, self._received)
        link.on_resync_async(self.resync)

    def key(self, agent_id: str) -> str:
        return self.link.key("agent", agent_id)

    @property
    def ttl_s(self) -> int:
        return max(1, math.ceil(self.book.settings.remove_after_s))

    # -- local heartbeats --------------------------------------------------------------
    def _reported(self, report: dict[str, Any]) -> None:
        if self.link.up:
            self._bg.spawn(self._store(report), f"share agent {report['agent_id']}")
        else:  # the resync stores it (it is newer than what is stored)
            self.link.count_dropped(CHANNEL)

    async def _store(self, *reports: dict[str, Any]) -> None:
        """Store and publish reports, in one round trip."""
        bodies = [encode(self.link.hub_id, {"op": "put", **report}) for report in reports]

        def write(pipe: Any) -> None:
            for report, body in zip(reports, bodies, strict=True):
                pipe.set(self.key(report["agent_id"]), body, ex=self.ttl_s)

        await self.link.write_and_publish(CHANNEL, write, *bodies)

    def _deregistered(self, agent_id: str, subject: str) -> None:
        if self.link.up:
            self._bg.spawn(self._delete(agent_id, subject), f"share deregister {agent_id}")
        else:  # lost: other hubs keep the agent's workers until their TTL passes
            self.link.count_dropped(CHANNEL)

    async def _delete(self, agent_id: str, subject: str) -> None:
        body = encode(self.link.hub_id, {"op": "del", "agent_id": agent_id, "owner": subject})
        await self.link.write_and_publish(CHANNEL, lambda pipe: pipe.delete(
            self.key(agent_id)), body)

    # -- other hubs' heartbeats --------------------------------------------------------
    def _received(self, payload: bytes) -> None:
        doc = decode(payload)
        if doc is None or not from_other_hub(doc, self.link.hub_id):
            return
        if doc.get("op") == "put":
            self._bg.spawn(self._apply(doc), "apply shared agent")  # may resolve DNS
        elif doc.get("op") == "del":
            self._apply_delete(doc)

    async def _apply(self, doc: dict[str, Any]) -> None:
        await self.book.apply_shared(doc)

    def _apply_delete(self, doc: dict[str, Any]) -> None:
        agent_id, owner = doc.get("agent_id"), doc.get("owner")
        if not isinstance(agent_id, str) or not isinstance(owner, str):
            return
        rec = self.book.records.get(agent_id)
        if rec is None:
            return
        if rec.owner != owner:  # only the token subject that reports it may deregister
            log.warning("ignored a shared deregistration of agent %s: another owner",
                        agent_id)
            return
        self.book.deregister(agent_id, owner, share=False)

    # -- after a (re)connect -----------------------------------------------------------
    async def resync(self) -> None:
        client = self.link.client
        keys = [k async for k in client.scan_iter(match=self.key("*"), count=500)]
        stored: dict[str, float] = {}
        for i in range(0, len(keys), MGET_BATCH):
            for value in await client.mget(keys[i:i + MGET_BATCH]):
                doc = decode(value)
                if doc is None:
                    continue
                agent_id, seen = doc.get("agent_id"), number(doc, "last_seen")
                if not isinstance(agent_id, str) or seen is None:
                    continue
                stored[agent_id] = seen
                if from_other_hub(doc, self.link.hub_id) or agent_id not in self.book.reports:
                    await self.book.apply_shared(doc)
        newer = [report for agent_id, report in list(self.book.reports.items())
                 if (seen := number(report, "last_seen")) is not None
                 and (agent_id not in stored or seen > stored[agent_id])]
        for i in range(0, len(newer), MGET_BATCH):
            await self._store(*newer[i:i + MGET_BATCH])
            if not self.link.up:
                return
        log.info("shared state: %d agents stored, %d written from this hub", len(stored),
                 len(newer))

    async def stop(self) -> None:
        await self._bg.stop()
