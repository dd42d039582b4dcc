"""Wires the shared rate limits, in-flight counts and prefix map into a running hub once
its Redis link exists (``state.backend: redis``).

Call :func:`attach_shared_limits` after the upstream context has built ``hub.proxy``
and while the event loop runs; ``await handle.aclose()`` at shutdown. What it changes:

* ``hub.admission.remote``: the tenant buckets live in Redis (``Hub.apply`` carries the
  strategy over to the ``Admission`` a reload builds);
* every worker's ``remote_in_flight``, kept from the other hubs' counts; the capacity
  queue is woken when they free slots;
* the cache-aware policy's ``on_served`` hook (put back on a policy a reload rebuilds);
* one metrics collector (:class:`SharedLimitsCollector`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hub.state.buckets import SharedBuckets
from hub.state.inflight import InflightShare
from hub.state.prefixes import PrefixShare

if TYPE_CHECKING:
    from hub.forward.proxy import Proxy
    from hub.routing.base import Policy
    from hub.runtime.hub import Hub
    from hub.state.link import SharedLink


class SharedLimitsCollector:
    """What the shared limits did, read at scrape time:
    ``spokehub_shared_rate_limit_fallbacks_total{on_outage}`` (admissions that could not
    use the shared buckets: limited by this hub alone, or refused with 503),
    ``spokehub_shared_prefix_entries_adopted_total`` (other hubs' answers put into this
    hub's prefix map) and ``spokehub_worker_remote_in_flight{worker}`` (other hubs'
    requests on each worker with ``max_concurrency``)."""

    def __init__(self, limits: SharedLimits) -> None:
        self._limits = limits

    def collect(self) -> Iterator[Metric]:
        limits = self._limits
        fallbacks = CounterMetricFamily(
            "spokehub_shared_rate_limit_fallbacks",
            "Admissions that could not use the shared rate-limit buckets (Redis out), by "
            "outcome (open: limited by this hub alone; closed: refused with 503)",
            labels=["on_outage"])
        for mode in ("open", "closed"):
            fallbacks.add_metric([mode], float(limits.buckets.fallbacks[mode]))
        yield fallbacks
        yield CounterMetricFamily(
            "spokehub_shared_prefix_entries_adopted",
            "Other hubs' answered prompts put into this hub's cache-aware prefix map",
            value=float(limits.prefixes.adopted))
        remote = GaugeMetricFamily(
            "spokehub_worker_remote_in_flight",
            "Requests other hubs run on the worker (workers with max_concurrency)",
            labels=["worker"])
        for w in limits.hub.registry:
            if w.spec.max_concurrency > 0:
                remote.add_metric([w.name], float(w.remote_in_flight))
        yield remote


@dataclass(slots=True)
class SharedLimits:
    buckets: SharedBuckets
    inflight: InflightShare
    prefixes: PrefixShare
    hub: Hub
    collector: SharedLimitsCollector | None = field(default=None)

    async def aclose(self) -> None:
        if self.hub.admission.remote is self.buckets:
            self.hub.admission.remote = None
        await self.prefixes.aclose()
        await self.inflight.aclose()
        await self.buckets.aclose()
        if self.collector is not None:
            with contextlib.suppress(KeyError):
                self.hub.metrics.prom.unregister(self.collector)


def _proxy(hub: Hub) -> Proxy | None:
    return hub.proxy if hub.pool is not None else None  # the proxy comes with the pool


def _policy(hub: Hub) -> Policy | None:
    proxy = _proxy(hub)
    return proxy.policy if proxy is not None else None


def _wake(hub: Hub, freed: int) -> None:
    proxy = _proxy(hub)
    if proxy is not None:
        for _ in range(min(freed, len(proxy.capacity))):
            proxy.capacity.wake()


def attach_shared_limits(hub: Hub, link: SharedLink) -> SharedLimits:
    """Share this hub's limits with the other hubs on ``link``; returns the handle to
    close at shutdown."""
    buckets = SharedBuckets(link, on_outage=lambda: hub.config.state.rate_limits_on_outage)
    hub.admission.remote = buckets
    inflight = InflightShare(link, lambda: hub.registry,
                             on_room=lambda freed: _wake(hub, freed))
    prefixes = PrefixShare(link, lambda: _policy(hub),
                           lambda name: hub.registry.get(name) is not None)
    limits = SharedLimits(buckets, inflight, prefixes, hub)
    limits.collector = SharedLimitsCollector(limits)
    hub.metrics.prom.register(limits.collector)
    inflight.start()
    prefixes.start()
    return limits
