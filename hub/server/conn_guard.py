"""Close client connections that never finish sending their first request.

aiohttp has no timeout for reading request headers, so a slowloris client that
sends a header byte every few seconds would hold its connection (and a file
descriptor) for as long as it likes. Once a second this guard looks at the open
connections and closes those that have not produced a first request within
``header_timeout_s``. Idle keep-alive connections are bounded by aiohttp's own
``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("spokehub.server")


class ConnectionGuard:
    def __init__(self, server: web.Server, header_timeout_s: float) -> None:
        self.server = server
        self.header_timeout_s = header_timeout_s
        self._first_seen: dict[RequestHandler, float] = {}
        self.closed = 0

    def sweep(self, now: float) -> None:
        connections = self.server.connections
        if len(self._first_seen) > len(connections):  # forget closed connections
            alive = set(connections)
            self._first_seen = {h: t for h, t in self._first_seen.items() if h in alive}
        for handler in connections:
            started = getattr(handler, "_request_count", 1) > 0 or getattr(
                handler, "_current_request", None) is not None
            if started:
                self._first_seen.pop(handler, None)
                continue
            first = self._first_seen.setdefault(handler, now)
            if now - first > self.header_timeout_s:
                self._first_seen.pop(handler, None)
                self.closed += 1
                log.warning("closing a connection that sent no complete request in %.0fs",
                            self.header_timeout_s)
                handler.force_close()
                transport = handler.transport
                if transport is not None:
                    transport.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            try:
                self.sweep(loop.time())
            except Exception:  # never let the guard die quietly
                log.exception("connection guard sweep failed")
