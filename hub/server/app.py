"""Build the aiohttp application: state, resources (started in order, closed in reverse), routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from hub.api.middleware import error_middleware
from hub.api.routes import add_routes
from hub.config.schema import Config
from hub.fleet.prober import Prober
from hub.forward.proxy import Proxy
from hub.probing.http import new_pool
from hub.runtime.hub import Hub
from hub.runtime.keys import HUB
from hub.state.attach import attach_shared_limits
from hub.state.attach_usage import attach_shared_usage
from hub.upstream import Pool


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """Upstream connections for requests: the hot path's own keep-alive pool."""
    hub = app[HUB]
    pool = Pool(keepalive_s=hub.config.timeouts.keepalive_s,
                max_body_bytes=hub.config.limits.max_upstream_body_bytes)
    hub.pool = pool
    hub.proxy = Proxy(hub.registry, pool, hub.config)
    hub.proxy.spill_gate = hub.ledger.spill_allowed  # a spent budget stops spill-over
    yield
    pool.close()


async def prober_ctx(app: web.Application) -> AsyncIterator[None]:
    """Active probes, over a pool of their own with a short keep-alive."""
    hub = app[HUB]
    pool = new_pool()
    prober = Prober(hub.registry, pool, lambda: hub.config.health,
                    after_round=hub.proxy.review_latency)
    await prober.probe_all()  # know who is up before taking traffic
    task = asyncio.create_task(prober.run(), name="spokehub-prober")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    pool.close()


async def agents_ctx(app: web.Application) -> AsyncIterator[None]:
    """Restore persisted agent workers, then expire silent agents every second."""
    hub = app[HUB]
    hub.agents.load()

    async def expire_loop() -> None:
        while True:
            await asyncio.sleep(1.0)
            hub.agents.expire()

    task = asyncio.create_task(expire_loop(), name="spokehub-agent-expiry")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    hub.agents.save()


async def ledger_ctx(app: web.Application) -> AsyncIterator[None]:
    """The usage ledger: open its file and load budgets before traffic; commit what is
    queued after the last request (started first, so closed last)."""
    hub = app[HUB]
    await hub.ledger.start()
    yield
    await hub.ledger.stop()


async def state_ctx(app: web.Application) -> AsyncIterator[None]:
    """Share fleet state with other hubs through Redis (state.backend: redis). Waits
    a few seconds at most for the first connect and resync: a hub whose Redis is down
    serves from its own state (the agents' state file) and joins when Redis is back."""
    hub = app[HUB]
    shared = hub.shared
    if shared is None:
        yield
        return
    shared.attach(hub.agents, hub.registry, lambda: hub.proxy.breakers)
    limits = attach_shared_limits(hub, shared.link)  # before start: its channels too
    usage = attach_shared_usage(hub, shared.link)  # response cache, budget counters
    await shared.start()
    yield
    await usage.aclose()
    await limits.aclose()
    await shared.stop()


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer is JSON, SSE or a static file: browsers must not guess otherwise."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def build_app(config: Config, config_path: str | None = None) -> web.Application:
    # The body cap is enforced per request from the live config (api/body.py), so a
    # reload can change it; aiohttp's own cap is only a hard ceiling.
    app = web.Application(middlewares=[error_middleware], client_max_size=1 << 30)
    app[HUB] = Hub(config, config_path)
    app.cleanup_ctx.append(ledger_ctx)
    app.cleanup_ctx.append(agents_ctx)
    app.cleanup_ctx.append(upstream_ctx)
    app.cleanup_ctx.append(state_ctx)
    app.cleanup_ctx.append(prober_ctx)
    app.on_response_prepare.append(_nosniff)
    add_routes(app)
    return app
