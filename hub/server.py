"""Run the hub on uvloop until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from aiohttp import web

from hub.app import build_app
from hub.config import Config

log = logging.getLogger("spokehub")

SHUTDOWN_GRACE_S = 30.0


async def serve(config: Config) -> None:
    app = build_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, config.listen.host, config.listen.port, backlog=1024,
                       reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for addr in runner.addresses:
        host, port = addr[0], addr[1]
        log.warning("spokehub listening on http://%s:%s (%d workers)", host, port,
                    len(config.workers))
    try:
        await stop.wait()
    finally:
        log.warning("spokehub shutting down")
        await runner.cleanup()


def run(config: Config) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config))
