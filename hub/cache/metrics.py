"""The response cache's Prometheus series, read from its counters at scrape time.

- ``spokehub_response_cache_hits_total``, ``..._misses_total``: lookups;
- ``spokehub_response_cache_bypasses_total{reason}``: requests on a cached route not
  looked up (``nondeterministic``, ``no_cache``, ``no_store``);
- ``spokehub_response_cache_stores_total``: answers stored;
- ``spokehub_response_cache_evictions_total{reason}``: entries dropped (``lru``: to make
  room; ``expired``: past their TTL);
- ``spokehub_response_cache_bytes``, ``spokehub_response_cache_entries``: held now.

Nothing is exported while the cache is off; a reload that changes the pepper starts
the counters again (Prometheus reads that as a counter reset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.cache.cache import ResponseCache

PREFIX = "spokehub_response_cache"


class CacheCollector(Collector):
    def __init__(self, cache: Callable[[], ResponseCache | None]) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self.cache()
        if cache is None:
            return
        store = cache.store
        yield CounterMetricFamily(f"{PREFIX}_hits", "Requests answered from the response "
                                  "cache", value=float(store.hits))
        yield CounterMetricFamily(f"{PREFIX}_misses", "Cache lookups that found no live "
                                  "entry", value=float(store.misses))
        bypasses = CounterMetricFamily(f"{PREFIX}_bypasses", "Requests on a cached route "
                                       "not looked up, by reason", labels=["reason"])
        for reason, n in cache.bypasses.items():
            bypasses.add_metric([reason], float(n))
        yield bypasses
        yield CounterMetricFamily(f"{PREFIX}_stores", "Answers stored in the response "
                                  "cache", value=float(cache.stored))
        evictions = CounterMetricFamily(f"{PREFIX}_evictions", "Entries dropped from the "
                                        "response cache, by reason", labels=["reason"])
        evictions.add_metric(["lru"], float(store.evicted_lru))
        evictions.add_metric(["expired"], float(store.expired))
        yield evictions
        yield GaugeMetricFamily(f"{PREFIX}_bytes", "Bytes the response cache holds "
                                "(keys, bodies, per-entry overhead)", value=float(store.bytes))
        yield GaugeMetricFamily(f"{PREFIX}_entries", "Entries in the response cache",
                                value=float(len(store)))

    def describe(self) -> Iterator[Metric]:
        return iter(())
