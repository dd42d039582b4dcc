"""Active health checks: probe every worker each ``health.interval_s``.

The prober writes what it learns into the registry; it knows nothing of the hub
around it: the health settings come from a getter (so a reload applies at the next
round) and whatever must follow a round (outlier review) is a callback. How a worker
is probed is :mod:`hub.probing`'s, the same code the agent runs; the prober's own
connection pool keeps probes apart from the hot path's connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hub.backends import backend_for
from hub.config.schema import Health
from hub.fleet.registry import Registry, Worker
from hub.probing import probe
from hub.upstream import Pool

log = logging.getLogger("spokehub.prober")


class Prober:
    def __init__(self, registry: Registry, pool: Pool, settings: Callable[[], Health],
                 after_round: Callable[[], object] = lambda: None) -> None:
        self.registry = registry
        self.pool = pool
        self.settings = settings
        self.after_round = after_round

    async def probe(self, worker: Worker) -> None:
        spec = worker.spec
        headers = backend_for(spec.kind).request_headers(spec)  # e.g. an API key
        result = await probe(self.pool, spec.kind, spec.url, headers,
                             self.settings().timeout_s)
        was = worker.healthy
        self.registry.apply_probe(worker, result)
        if worker.healthy != was:
            log.warning("worker %s is now %s (%s)", worker.name,
                        "up" if worker.healthy else "down", result.detail)

    async def probe_all(self) -> None:
        workers = list(self.registry)
        if workers:
            await asyncio.gather(*(self.probe(w) for w in workers))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings().interval_s)
            await self.probe_all()
            self.after_round()
