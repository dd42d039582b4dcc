"""Wires the response cache's shared level and the fleet-wide budget counters into a
running hub once its Redis link exists (``state.backend: redis``).

Call :func:`attach_shared_usage` while the event loop runs and before the link starts
(its resync handler must be registered first); ``await handle.aclose()`` at shutdown.
What it changes: ``hub.cache_remote`` and the live cache's ``remote`` (``Hub.apply``
puts it on a cache a reload rebuilds), ``hub.ledger.fleet`` (the ledger lives as long
as the hub), and one metrics collector. ``state.share_response_cache``,
``state.share_budgets`` and their timings are read live, so a reload may change them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from hub.state.shared_budgets import SharedBudgets
from hub.state.shared_cache import SharedCache

if TYPE_CHECKING:
    from hub.runtime.hub import Hub
    from hub.state.link import SharedLink


class SharedUsageCollector:
    """The shared cache's lookups and stores, the budget sync rounds."""

    def __init__(self, usage: SharedUsage) -> None:
        self._usage = usage

    def collect(self) -> Iterator[Metric]:
        yield from self._usage.cache.collect()
        yield from self._usage.budgets.collect()


@dataclass(slots=True)
class SharedUsage:
    cache: SharedCache
    budgets: SharedBudgets
    hub: Hub
    collector: SharedUsageCollector | None = field(default=None)

    async def aclose(self) -> None:
        hub = self.hub
        await self.budgets.aclose()
        if hub.ledger.fleet is self.budgets:
            hub.ledger.fleet = None
        hub.cache_remote = None
        if hub.cache is not None and hub.cache.remote is self.cache:
            hub.cache.remote = None
        await self.cache.aclose()
        if self.collector is not None:
            with contextlib.suppress(KeyError):
                hub.metrics.prom.unregister(self.collector)


def attach_shared_usage(hub: Hub, link: SharedLink) -> SharedUsage:
    """Share this hub's response cache and budget usage with the other hubs on
    ``link``; returns the handle to close at shutdown."""
    cache = SharedCache(
        link, timeout_s=lambda: hub.config.state.cache_lookup_timeout_s,
        enabled=lambda: hub.config.state.share_response_cache,
        max_entry_bytes=lambda: hub.config.response_cache.max_entry_bytes)
    hub.cache_remote = cache
    if hub.cache is not None:
        hub.cache.remote = cache
    budgets = SharedBudgets(link, hub.ledger,
                            every_s=lambda: hub.config.state.budget_sync_s,
                            enabled=lambda: hub.config.state.share_budgets)
    hub.ledger.fleet = budgets
    budgets.start()
    usage = SharedUsage(cache, budgets, hub)
    usage.collector = SharedUsageCollector(usage)
    hub.metrics.prom.register(usage.collector)
    return usage
