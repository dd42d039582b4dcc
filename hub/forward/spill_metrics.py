"""``spokehub_spillovers_total{reason,model}``: requests sent to the fallback tier.

The proxy counts (a plain dict, no Prometheus on the hot path); the collector reads the
counts at scrape time. ``model`` only ever holds models a fallback worker serves (the
config names them), so clients cannot grow the label set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class SpillCounts:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, reason: str, model: str) -> None:
        key = (reason, model)
        self.counts[key] = self.counts.get(key, 0) + 1

    def get(self, reason: str, model: str) -> int:
        return self.counts.get((reason, model), 0)


class SpillCollector(Collector):
    def __init__(self, counts: Callable[[], SpillCounts | None]) -> None:
        self.counts = counts  # the proxy's, once it exists

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("spokehub_spillovers",
                                     "Requests sent to the fallback tier, by why they left "
                                     "the local fleet", labels=["reason", "model"])
        counts = self.counts()
        if counts is not None:
            for (reason, model), n in sorted(counts.counts.items()):
                family.add_metric([reason, model], float(n))
        yield family
