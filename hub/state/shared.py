"""The fleet state one hub shares with the others (``state.backend: redis``): the
link, and the parts riding on it that this package owns (agent workers, drain flags,
breaker transitions). Built with the hub, started once the proxy exists (breakers
live there), stopped before it."""

from __future__ import annotations

from collections.abc import Callable

from hub.fleet.agents import AgentBook
from hub.fleet.registry import Registry
from hub.resilience.breaker import Breakers
from hub.state.agent_sync import AgentSync
from hub.state.breakers import BreakerSync
from hub.state.config import StateConfig
from hub.state.drains import DrainSync
from hub.state.redis_link import RedisLink


class SharedState:
    def __init__(self, cfg: StateConfig, link: RedisLink | None = None) -> None:
        self.cfg = cfg
        self.link = link or RedisLink(cfg.url(), cfg.namespace)
        self.agents: AgentSync | None = None
        self.drains: DrainSync | None = None
        self.breakers: BreakerSync | None = None

    def holding(self) -> bool:
        """Redis is down (or not reached yet): keep what other hubs reported."""
        return not self.link.up

    def attach(self, book: AgentBook, registry: Registry,
               breakers: Callable[[], Breakers]) -> None:
        """Share these (before ``start``, so the first resync covers them)."""
        self.agents = AgentSync(self.link, book)
        self.drains = DrainSync(self.link, registry)
        self.breakers = BreakerSync(self.link, registry, breakers)

    async def start(self, wait_s: float | None = None) -> None:
        await self.link.start(wait_s)

    async def stop(self) -> None:
        for part in (self.agents, self.drains, self.breakers):
            if part is not None:
                await part.stop()
        await self.link.stop()

    def __repr__(self) -> str:
        return f"<SharedState {self.link!r}>"
