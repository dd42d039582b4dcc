"""Prometheus metrics, on a registry per hub instance (no module globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from hub.fleet.registry import Registry
from hub.forward.call import Call
from hub.forward.spill_metrics import SpillCollector, SpillCounts
from hub.observe.route_metrics import RouteMetrics
from hub.observe.settings import MetricsConfig
from hub.observe.timeline import Timeline
from hub.observe.tokens import TokenMetrics

if TYPE_CHECKING:
    from hub.forward.proxy import Proxy

BREAKER_STATE_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

MAX_CACHED_CHILDREN = 10_000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _WorkerCollector(Collector):
    """Reads worker state from the registry at scrape time: nothing to keep in sync."""

    def __init__(self, registry: Registry, proxy: Callable[[], Proxy | None]) -> None:
        self.registry = registry
        self.proxy = proxy

    def collect(self):  # type: ignore[no-untyped-def]
        labels = ["worker"]
        up = GaugeMetricFamily("spokehub_worker_up", "1 if the worker passes health checks",
                               labels=labels)
        routable = GaugeMetricFamily("spokehub_worker_routable",
                                     "1 if the worker takes new requests now", labels=labels)
        draining = GaugeMetricFamily("spokehub_worker_draining", "1 while draining",
                                     labels=labels)
        inflight = GaugeMetricFamily("spokehub_worker_in_flight",
                                     "Requests in flight to the worker", labels=labels)
        slots_total = GaugeMetricFamily("spokehub_worker_slots_total",
                                        "Slots the worker reports", labels=labels)
        slots_busy = GaugeMetricFamily("spokehub_worker_slots_busy",
                                       "Busy slots the worker reports", labels=labels)
        vram = GaugeMetricFamily("spokehub_worker_vram_free_mb", "Free VRAM the agent reports",
                                 labels=labels)
        breaker = GaugeMetricFamily("spokehub_breaker_state",
                                    "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                    labels=labels)
        opened = CounterMetricFamily("spokehub_breaker_opened",
                                     "Times the worker's breaker opened", labels=labels)
        proxy = self.proxy()
        for w in self.registry:
            name = [w.name]
            up.add_metric(name, 1.0 if w.healthy else 0.0)
            routable.add_metric(name, 1.0 if w.routable else 0.0)
            draining.add_metric(name, 1.0 if w.draining else 0.0)
            inflight.add_metric(name, float(w.in_flight))
            if w.slots_total is not None:
                slots_total.add_metric(name, float(w.slots_total))
            if w.slots_busy is not None:
                slots_busy.add_metric(name, float(w.slots_busy))
            if w.vram_free_mb is not None:
                vram.add_metric(name, w.vram_free_mb)
            if proxy is not None:
                b = proxy.breakers.get(w.name)
                breaker.add_metric(name, BREAKER_STATE_VALUE.get(b.state.value, 0.0))
                opened.add_metric(name, float(b.opened_count))
        yield from (up, routable, draining, inflight, slots_total, slots_busy, vram, breaker,
                    opened)
        if proxy is not None:
            yield GaugeMetricFamily("spokehub_capacity_queue_length",
                                    "Requests waiting in the hub for a worker with room",
                                    value=float(len(proxy.capacity)))
            yield from _queue_families(proxy)


def _queue_families(proxy: Proxy) -> Iterator[Metric]:
    """The worker queue by priority class: waiting now, shed, and time waited."""
    queue = proxy.capacity
    waiting = GaugeMetricFamily("spokehub_worker_queue_waiting",
                                "Requests waiting for a worker with room, by class",
                                labels=["class"])
    shed = CounterMetricFamily("spokehub_worker_queue_shed",
                               "Requests refused or dropped from the worker queue "
                               "because their class is shed first", labels=["class"])
    wait = HistogramMetricFamily("spokehub_worker_queue_wait_seconds",
                                 "Time a request waited in the worker queue, by class",
                                 labels=["class"])
    for klass, n in queue.waiting.items():
        waiting.add_metric([klass], float(n))
        shed.add_metric([klass], float(queue.shed_total[klass]))
        hist = queue.wait_s[klass]
        wait.add_metric([klass], hist.buckets(), hist.sum)
    yield from (waiting, shed, wait)


class Metrics:
    def __init__(self, registry: Registry,
                 proxy: Callable[[], Proxy | None] = lambda: None,
                 settings: MetricsConfig | None = None) -> None:
        self.prom = CollectorRegistry(auto_describe=True)
        self.requests = Counter("spokehub_requests_total",
                                "Requests by route, model, worker, status",
                                ["route", "model", "worker", "status"], registry=self.prom)
        self.errors = Counter("spokehub_errors_total", "Errors by kind", ["kind"],
                              registry=self.prom)
        self.latency = Histogram("spokehub_request_seconds", "Total request time",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.prom)
        self.ttft = Histogram("spokehub_time_to_first_byte_seconds",
                              "Time from sending upstream to its first byte",
                              ["route"], buckets=LATENCY_BUCKETS, registry=self.prom)
        self.attempts = Counter("spokehub_upstream_attempts_total",
                                "Upstream attempts, including failovers", registry=self.prom)
        self.prom.register(_WorkerCollector(registry, proxy))
        # spokehub_spillovers_total{reason,model}
        self.prom.register(SpillCollector(lambda: _spills(proxy())))
        self.tokens = TokenMetrics(settings)  # tokens, first-token and queue times, tenants
        self.prom.register(self.tokens)
        self.timeline = Timeline()  # the status page's last 15 minutes
        self.routing = RouteMetrics(self.prom)
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._route_children: dict[str, tuple[Any, Any]] = {}

    def observe(self, call: Call, seconds: float) -> None:
        # Label children are cached: .labels() costs several microseconds per call.
        # The model label is only taken from requests a worker served, so clients
        # cannot blow up label cardinality with made-up model names.
        key = (call.route, call.model if call.worker else "-", call.worker or "-", call.status)
        child = self._request_children.get(key)
        if child is None:
            if len(self._request_children) >= MAX_CACHED_CHILDREN:
                self._request_children.clear()
            child = self.requests.labels(key[0], key[1], key[2], str(key[3]))
            self._request_children[key] = child
        child.inc()
        hists = self._route_children.get(call.route)
        if hists is None:
            hists = (self.latency.labels(call.route), self.ttft.labels(call.route))
            self._route_children[call.route] = hists
        hists[0].observe(seconds)
        if call.ttft_s is not None:
            hists[1].observe(call.ttft_s)
        if call.attempts:
            self.attempts.inc(call.attempts)
        if call.error:
            self.errors.labels(call.error).inc()
        end = call.started + seconds
        self.tokens.observe(call, end)
        self.timeline.record(call, end)
        self.routing.observe(call)

    def render(self) -> bytes:
        return generate_latest(self.prom)


def _spills(proxy: Proxy | None) -> SpillCounts | None:
    return proxy.spills if proxy is not None else None
