"""The proxy hands the admission section's worker-queue settings to its queue, on start
and on reload, and the metrics page shows the queue by class."""

from __future__ import annotations

from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec
from hub.fleet.registry import Registry
from hub.forward.proxy import Proxy
from hub.observe.metrics import Metrics


def test_settings_on_start_and_reload() -> None:
    registry = Registry([WorkerSpec("w0", "http://w0")])
    proxy = Proxy(registry, None, parse_config({}))  # type: ignore[arg-type]
    q = proxy.capacity
    assert (q.max_waiters, q.sheddable_max, q.aging_s, q.weight("x")) == (1000, 500, 10.0, 1.0)
    proxy.configure(parse_config({"admission": {
        "worker_queue_max": 10, "worker_queue_sheddable_max": 3, "batch_aging_s": 2,
        "weight": 2, "tenants": {"gold": {"weight": 5}}}}))
    assert proxy.capacity is q  # waiters keep their places across a reload
    assert (q.max_waiters, q.sheddable_max, q.aging_s) == (10, 3, 2.0)
    assert (q.weight("gold"), q.weight("other")) == (5.0, 2.0)


def test_queue_metrics_by_class() -> None:
    registry = Registry([WorkerSpec("w0", "http://w0")])
    proxy = Proxy(registry, None, parse_config({}))  # type: ignore[arg-type]
    proxy.capacity.shed_total["sheddable"] = 2
    proxy.capacity.wait_s["batch"].observe(0.3)
    text = Metrics(registry, lambda: proxy).render().decode()
    assert 'spokehub_worker_queue_waiting{class="interactive"} 0.0' in text
    assert 'spokehub_worker_queue_shed_total{class="sheddable"} 2.0' in text
    assert 'spokehub_worker_queue_wait_seconds_bucket{class="batch",le="0.5"} 1.0' in text
    assert 'spokehub_worker_queue_wait_seconds_count{class="batch"} 1.0' in text
