"""Active health checks: probe every worker each ``health.interval_s``.

The prober writes what it learns into the registry; it knows nothing of the hub
around it: the health settings come from a getter (so a reload applies at the next
round) and whatever must follow a round (outlier review) is a callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from hub.backends import backend_for
from hub.config.schema import Health
from hub.fleet.registry import ProbeResult, Registry, Worker

log = logging.getLogger("spokehub.prober")


class Prober:
    def __init__(self, registry: Registry, session: aiohttp.ClientSession,
                 settings: Callable[[], Health],
                 after_round: Callable[[], object] = lambda: None) -> None:
        self.registry = registry
        self.session = session
        self.settings = settings
        self.after_round = after_round

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.settings().timeout_s)

    async def probe(self, worker: Worker) -> None:
        backend = backend_for(worker.spec.kind)
        try:
            result = await backend.probe(self.session, worker.spec, self.timeout)
        except Exception as exc:  # a bad answer must never kill the prober
            log.warning("probe of %s crashed: %r", worker.name, exc)
            result = ProbeResult(healthy=False, detail=f"probe error: {type(exc).__name__}")
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
