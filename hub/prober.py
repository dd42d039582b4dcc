"""Active health checks: probe every worker each ``health.interval_s``."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from hub.backends import backend_for
from hub.registry import ProbeResult, Worker
from hub.runtime import Hub

log = logging.getLogger("spokehub.prober")


class Prober:
    def __init__(self, hub: Hub, session: aiohttp.ClientSession) -> None:
        self.hub = hub
        self.registry = hub.registry
        self.session = session

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.hub.config.health.timeout_s)

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
            await asyncio.sleep(self.hub.config.health.interval_s)
            await self.probe_all()
            self.hub.proxy.review_latency()
