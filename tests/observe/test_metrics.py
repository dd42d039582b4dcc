from __future__ import annotations

from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult, Registry
from hub.forward.call import Call
from hub.forward.proxy import Proxy
from hub.observe.metrics import Metrics
from hub.resilience.breaker import Outcome


def _metrics() -> tuple[Metrics, Registry, Proxy]:
    registry = Registry([WorkerSpec("w0", "http://w0"), WorkerSpec("w1", "http://w1")])
    for w in registry:
        registry.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"m"})))
    proxy = Proxy(registry, None, parse_config({}))  # type: ignore[arg-type]
    return Metrics(registry, lambda: proxy), registry, proxy


def test_request_and_worker_metrics_render() -> None:
    metrics, registry, proxy = _metrics()
    call = Call(request_id="r", route="/chat/completions", model="m", worker="w0", status=200,
                attempts=1, ttft_s=0.01)
    metrics.observe(call, 0.02)
    metrics.observe(call, 0.03)
    w1 = registry.get("w1")
    assert w1 is not None
    w1.draining = True
    for _ in range(proxy.breakers.cfg.consecutive_failures):
        b = proxy.breakers.get("w1")
        assert b.allow()

        b.record(Outcome.FAILURE)
    text = metrics.render().decode()
    assert ('spokehub_requests_total{model="m",route="/chat/completions",status="200",'
            'worker="w0"} 2.0') in text
    assert 'spokehub_worker_up{worker="w0"} 1.0' in text
    assert 'spokehub_worker_draining{worker="w1"} 1.0' in text
    assert 'spokehub_breaker_state{worker="w1"} 2.0' in text
    assert 'spokehub_breaker_state{worker="w0"} 0.0' in text
    assert "spokehub_capacity_queue_length 0.0" in text


def test_unserved_model_names_do_not_become_labels() -> None:
    metrics, _, _ = _metrics()
    for i in range(50):
        metrics.observe(Call(request_id="r", route="/chat/completions", model=f"junk{i}",
                             status=404, error="model_not_found"), 0.001)
    text = metrics.render().decode()
    assert "junk" not in text
    assert 'spokehub_errors_total{kind="model_not_found"} 50.0' in text
