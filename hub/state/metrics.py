"""The link's health and traffic as Prometheus metrics, read at scrape time:
``spokehub_state_backend_up`` (1 while Redis answers), messages published, received
and dropped (not sent: Redis was down) per channel, resyncs and outages."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.state.redis_link import RedisLink


class StateCollector(Collector):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def collect(self) -> Iterator[Metric]:
        link = self.link
        yield GaugeMetricFamily("spokehub_state_backend_up",
                                "1 while the shared-state store (Redis) answers",
                                value=1.0 if link.up else 0.0)
        for name, counts, text in (
                ("published", link.published, "Shared-state messages this hub published"),
                ("received", link.received, "Shared-state messages this hub received"),
                ("dropped", link.dropped, "Shared-state messages not sent: Redis was down")):
            family = CounterMetricFamily(f"spokehub_state_messages_{name}", text,
                                         labels=["channel"])
            for channel, n in sorted(counts.items()):
                family.add_metric([channel], float(n))
            yield family
        yield CounterMetricFamily("spokehub_state_resyncs",
                                  "Full resyncs with the shared store (start and after "
                                  "each outage)", value=float(link.resyncs))
        yield CounterMetricFamily("spokehub_state_outages",
                                  "Times the shared store became unreachable",
                                  value=float(link.outages))

    def describe(self) -> Iterator[Metric]:
        return iter(())
