"""Build the aiohttp application: state, resources (started in order, closed in reverse), routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from hub.api.middleware import error_middleware
from hub.api.routes import add_routes
from hub.config import Config
from hub.keys import CONFIG, METRICS, PROXY, REGISTRY, UPSTREAM
from hub.metrics import Metrics
from hub.prober import Prober
from hub.proxy import Proxy
from hub.registry import Registry
from hub.routing import make_policy


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """One pooled client session for all workers (keep-alive per worker)."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30,
                                     enable_cleanup_closed=False)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                    skip_auto_headers=("User-Agent",))
    app[UPSTREAM] = session
    config = app[CONFIG]
    app[PROXY] = Proxy(app[REGISTRY], make_policy(config.routing.policy), session,
                       config.timeouts, config.routing.max_attempts)
    yield
    await session.close()


async def prober_ctx(app: web.Application) -> AsyncIterator[None]:
    prober = Prober(app[REGISTRY], app[UPSTREAM], app[CONFIG].health)
    await prober.probe_all()  # know who is up before taking traffic
    task = asyncio.create_task(prober.run(), name="spokehub-prober")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=config.limits.max_body_bytes)
    registry = Registry(config.workers, healthy_after=config.health.healthy_after,
                        unhealthy_after=config.health.unhealthy_after)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[METRICS] = Metrics(registry)
    app.cleanup_ctx.append(upstream_ctx)
    app.cleanup_ctx.append(prober_ctx)
    add_routes(app)
    return app
