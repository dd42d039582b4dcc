"""Token metrics from finished calls, as Prometheus renders them (hub.observe.tokens)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hub.config.kit import ConfigError
from hub.config.schema import parse_config
from hub.forward.call import Call
from hub.observe import settings as observe_settings
from hub.observe.settings import MetricsConfig
from hub.observe.tokens import TTFT_BUCKETS, Hist, TokenMetrics
from hub.observe.usage import StreamTap, Usage

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: TokenMetrics) -> Samples:
    registry = CollectorRegistry()
    registry.register(metrics)
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def lbl(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def call(**kw: object) -> Call:
    base: dict[str, object] = {"request_id": "r", "route": "/chat/completions", "model": "m",
                               "worker": "w0", "status": 200, "started": 100.0,
                               "tenant": "acme"}
    base.update(kw)
    return Call(**base)  # type: ignore[arg-type]


def test_reported_tokens_count_per_model_and_worker() -> None:
    m = TokenMetrics()
    m.observe(call(answered=True, usage=Usage(17, 5, 16, 1200.0, 0.004)), 101.0)
    m.observe(call(answered=True, usage=Usage(3, 2, None)), 101.0)
    m.observe(call(answered=True, usage=Usage(4, 1, 0), worker="w1"), 101.0)
    s = samples(m)
    assert s["spokehub_prompt_tokens_total", lbl(model="m", worker="w0")] == 20
    assert s["spokehub_completion_tokens_total", lbl(model="m", worker="w0")] == 7
    assert s["spokehub_cached_prompt_tokens_total", lbl(model="m", worker="w0")] == 16
    assert s["spokehub_tokens_unreported_total", lbl(model="m", worker="w0")] == 0
    assert s["spokehub_prompt_tokens_total", lbl(model="m", worker="w1")] == 4
    assert s["spokehub_generation_tokens_per_second_count", lbl(model="m")] == 1
    assert s["spokehub_generation_tokens_per_second_bucket", lbl(model="m", le="1000.0")] == 0
    assert s["spokehub_generation_tokens_per_second_bucket", lbl(model="m", le="2000.0")] == 1
    assert s["spokehub_tenant_tokens_total", lbl(tenant="acme", kind="prompt")] == 24
    assert s["spokehub_tenant_tokens_total", lbl(tenant="acme", kind="cached")] == 16


def test_unreported_answers_count_nothing_else() -> None:
    m = TokenMetrics()
    m.observe(call(answered=True, usage=None), 101.0)
    m.observe(call(answered=False, status=502, error="upstream_error"), 101.0)  # no answer
    s = samples(m)
    assert s["spokehub_tokens_unreported_total", lbl(model="m", worker="w0")] == 1
    assert s["spokehub_prompt_tokens_total", lbl(model="m", worker="w0")] == 0
    assert not [k for k in s if k[0] == "spokehub_tenant_tokens_total"]


def test_first_token_inter_token_and_queue_wait() -> None:
    m = TokenMetrics()
    tap = StreamTap(first_at=100.5)
    for i, at in enumerate((100.5, 100.515, 100.53, 101.0)):
        tap.seen(b"data: %d\n\n" % i, at)
    m.observe(call(first_token_at=100.5, tap=tap, queued_at=100.001, sent_at=100.301,
                   answered=True), 101.0)
    m.observe(call(worker=None, status=503, error="workers_busy", queued_at=100.0), 160.0)
    s = samples(m)
    ttft = lbl(model="m")
    assert s["spokehub_time_to_first_token_seconds_count", ttft] == 1
    assert s["spokehub_time_to_first_token_seconds_sum", ttft] == pytest.approx(0.5)
    assert s["spokehub_time_to_first_token_seconds_bucket", lbl(model="m", le="0.25")] == 0
    assert s["spokehub_time_to_first_token_seconds_bucket", lbl(model="m", le="0.5")] == 1
    assert s["spokehub_inter_token_seconds_count", ttft] == 3
    assert s["spokehub_inter_token_seconds_sum", ttft] == pytest.approx(0.5)
    assert s["spokehub_inter_token_seconds_bucket", lbl(model="m", le="0.02")] == 2
    assert s["spokehub_queue_wait_seconds_count", lbl()] == 2
    assert s["spokehub_queue_wait_seconds_bucket", lbl(le="0.5")] == 1  # 0.3 s
    assert s["spokehub_queue_wait_seconds_bucket", lbl(le="60.0")] == 2  # timed out at 60 s
    assert s["spokehub_admission_rejected_total", lbl(tenant="acme", reason="capacity")] == 1


def test_model_labels_only_for_served_requests() -> None:
    m = TokenMetrics()
    for i in range(20):
        m.observe(call(model=f"junk{i}", worker=None, status=404, error="model_not_found",
                       first_token_at=None), 101.0)
    assert "junk" not in generate_latest_text(m)


def generate_latest_text(m: TokenMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(m)
    return generate_latest(registry).decode()


def test_tenants_beyond_the_cap_are_other() -> None:
    m = TokenMetrics(MetricsConfig(max_tenants=2))
    for tenant in ("a", "b", "c", "d", "a"):
        m.observe(call(tenant=tenant, answered=True, usage=Usage(1, 1, None)), 101.0)
        m.observe(call(tenant=tenant, worker=None, status=429,
                       error="rate_limit_exceeded"), 101.0)
    s = samples(m)
    prompt = {dict(k[1])["tenant"]: v for k, v in s.items()
              if k[0] == "spokehub_tenant_tokens_total" and ("kind", "prompt") in k[1]}
    assert prompt == {"a": 2, "b": 1, "other": 2}
    rejected = {dict(k[1])["tenant"]: v for k, v in s.items()
                if k[0] == "spokehub_admission_rejected_total"}
    assert rejected == {"a": 2, "b": 1, "other": 2}
    m.configure(MetricsConfig(max_tenants=0))  # a reload: labelled tenants keep theirs
    assert m.tenant_label("a") == "a" and m.tenant_label("zz") == "other"


def test_histogram_buckets_are_cumulative() -> None:
    h = Hist(TTFT_BUCKETS)
    for v in (0.0, 0.01, 0.011, 5.0, 1e6):
        h.observe(v)
    b = dict(h.buckets())
    assert b["0.01"] == 2 and b["0.025"] == 3 and b["5.0"] == 4 and b["600.0"] == 4
    assert b["+Inf"] == 5 and h.count == 5


def test_config_sections() -> None:
    cfg = parse_config({"metrics": {"max_tenants": 7},
                        "tracing": {"otlp_endpoint": "http://127.0.0.1:4318/v1/traces",
                                    "service_name": "hub-a", "sample_ratio": 0.5}})
    assert cfg.metrics.max_tenants == 7
    assert cfg.tracing.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert (cfg.tracing.service_name, cfg.tracing.sample_ratio) == ("hub-a", 0.5)
    assert parse_config({}).tracing.otlp_endpoint is None
    for bad, key in (({"metrics": {"max_tenants": -1}}, "metrics.max_tenants"),
                     ({"metrics": {"tenants": 1}}, "metrics.tenants"),
                     ({"tracing": {"sample_ratio": 1.5}}, "tracing.sample_ratio"),
                     ({"tracing": {"otlp_endpoint": "collector:4318"}}, "tracing.otlp_endpoint"),
                     ({"tracing": {"endpoint": "http://x"}}, "tracing.endpoint")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(bad)


def test_export_without_the_otel_extra_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe_settings, "otel_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"tracing\.otlp_endpoint: .*spokehub\[otel\]"):
        parse_config({"tracing": {"otlp_endpoint": "http://127.0.0.1:4318/v1/traces"}})
    assert parse_config({"tracing": {"sample_ratio": 0.1}}).tracing.otlp_endpoint is None
