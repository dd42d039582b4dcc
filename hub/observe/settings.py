"""The ``metrics:`` and ``tracing:`` sections of the hub config.

::

    metrics:
      max_tenants: 100        # distinct tenants labelled in spokehub_tenant_tokens_total
                              # (and spokehub_admission_rejected_total); later ones are
                              # counted as tenant "other" (0: every tenant is "other")
    tracing:
      otlp_endpoint: null     # e.g. http://127.0.0.1:4318/v1/traces: export one span per
                              # request over OTLP/HTTP (needs the ``otel`` extra)
      service_name: spokehub  # the spans' service.name
      sample_ratio: 1.0       # share of new traces exported; a client's traceparent
                              # decides for its own trace (its sampled flag)

Trace context (``traceparent``) is passed on to workers whether or not spans are
exported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from hub.config.kit import ConfigError, Section, check_url


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    max_tenants: int = 100


@dataclass(frozen=True, slots=True)
class TracingConfig:
    otlp_endpoint: str | None = None
    service_name: str = "spokehub"
    sample_ratio: float = 1.0
    export_timeout_s: float = 10.0


def otel_installed() -> bool:
    """The optional ``otel`` extra (OpenTelemetry SDK and OTLP/HTTP exporter) is there."""
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ImportError:
        return False


def parse_metrics(raw: object, path: str = "metrics") -> MetricsConfig:
    s = Section(raw, path)
    out = MetricsConfig(max_tenants=s.integer("max_tenants", 100, lo=0, hi=10_000))
    s.done()
    return out


def parse_tracing(raw: object, path: str = "tracing") -> TracingConfig:
    s = Section(raw, path)
    endpoint = s.text("otlp_endpoint")
    ratio = s.number("sample_ratio", 1.0, lo=0.0, exclusive_lo=False)
    if ratio > 1.0:
        raise ConfigError(f"{s.key('sample_ratio')}: must be between 0 and 1, got {ratio}")
    out = TracingConfig(
        otlp_endpoint=None if endpoint is None else check_url(endpoint, s.key("otlp_endpoint")),
        service_name=s.text("service_name", "spokehub"),
        sample_ratio=ratio,
        export_timeout_s=s.number("export_timeout_s", 10.0))
    s.done()
    if out.otlp_endpoint and not otel_installed():
        raise ConfigError(f"{s.key('otlp_endpoint')}: span export needs the OpenTelemetry "
                          f"SDK: pip install 'spokehub[otel]'")
    return out
