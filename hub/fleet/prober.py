"""Active health checks: probe every worker each ``health.interval_s``.

The prober writes what it learns into the registry; it knows nothing of the hub
around it: the health settings come from a getter (so a reload applies at the next
round) and whatever must follow a round (outlier review) is a callback. How a worker
is probed is :mod:`hub.probing`'s, the same code the agent runs; the prober's own
connection pool keeps probes apart from the hot path's connections.

Probes run with bounded concurrency: at most ``MAX_PROBES`` at once, of which at most
``MAX_AGENT_PROBES`` for agent-registered workers, and config workers are started
first in each round. A fleet of hundreds of agent workers (or one hostile agent at
its cap) cannot flood the hub's sockets or starve the config workers' checks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hub.backends import backend_for
from hub.config.schema import Health
from hub.fleet.agent_policy import redact_text
from hub.fleet.registry import Registry, Worker
from hub.probing import probe
from hub.upstream import Pool

log = logging.getLogger("spokehub.prober")

MAX_PROBES = 8
MAX_AGENT_PROBES = 4


class Prober:
    def __init__(self, registry: Registry, pool: Pool, settings: Callable[[], Health],
                 after_round: Callable[[], object] = lambda: None) -> None:
        self.registry = registry
        self.pool = pool
        self.settings = settings
        self.after_round = after_round
        self._all = asyncio.Semaphore(MAX_PROBES)
        self._agents = asyncio.Semaphore(MAX_AGENT_PROBES)

    async def probe(self, worker: Worker) -> None:
        if worker.source == "config":
            async with self._all:
                await self._probe(worker)
        else:
            async with self._agents, self._all:
                await self._probe(worker)

    async def _probe(self, worker: Worker) -> None:
        spec = worker.spec
        headers = backend_for(spec.kind).request_headers(spec)  # e.g. an API key
        result = await probe(self.pool, spec.kind, spec.url, headers,
                             self.settings().timeout_s)
        was = worker.healthy
        self.registry.apply_probe(worker, result)
        if worker.healthy != was:
            log.warning("worker %s is now %s (%s)", worker.name,
                        "up" if worker.healthy else "down", redact_text(result.detail))

    async def probe_all(self) -> None:
        # Config workers first: tasks reach the semaphores in creation order.
        workers = sorted(self.registry, key=lambda w: w.source != "config")
        if workers:
            await asyncio.gather(*(self.probe(w) for w in workers))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings().interval_s)
            await self.probe_all()
            self.after_round()
