"""The agent's HTTP client: the hub's small HTTP/1.1 pool, one call at a time.

The agent makes a handful of small requests per heartbeat, so it uses
:mod:`hub.upstream` (standard library only) through :mod:`hub.probing.http` instead
of aiohttp, whose import alone would double the daemon's memory. Proxy variables
(``HTTP_PROXY`` and friends) are never consulted: local workers must not be reached
through a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from agent import __version__
from hub.probing.http import new_pool
from hub.upstream import Pool

USER_AGENT = f"spokehub-agent/{__version__}"
# Sent with every request: to the hub and in probes of the local workers.
HEADERS = {"User-Agent": USER_AGENT}
# The hub's replies are a few KiB; a larger one is refused whole, never cut off.
MAX_REPLY_BYTES = 8 * 1024 * 1024


@contextlib.asynccontextmanager
async def open_pool(urls: Iterable[str] = ()) -> AsyncIterator[Pool]:
    """A connection pool for the hub and the local workers (a TLS context is loaded
    only if one of ``urls`` is https), its idle connections closed on exit."""
    pool = new_pool(urls)
    try:
        yield pool
    finally:
        pool.close()
        await asyncio.sleep(0)  # let the transports finish closing
