"""Optional span export over OTLP/HTTP (protobuf), with the OpenTelemetry SDK.

Imported only when ``tracing.otlp_endpoint`` is set (the ``otel`` extra:
``pip install 'spokehub[otel]'``). One span per request, kind SERVER, named after the
route (``POST /v1/chat/completions``), with the ids the worker saw in ``traceparent``:
the hub's span id is the one passed on as the worker's parent, so a worker that traces
too hangs its spans under the hub's. The span is made when the request has finished,
with its real start and end times; the SDK's batch processor queues it and a
background thread POSTs batches to the endpoint, so the request path only pays for
building the span object.

Attributes: request id, route, model, worker, attempts, status, error code, tenant,
and the token counts the worker reported. Never prompt or answer text.
"""

from __future__ import annotations

import time

from opentelemetry import trace as otel
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import AttributeValue

from hub.forward.call import Call
from hub.observe.settings import TracingConfig


class _GivenIds(IdGenerator):
    """Hands the SDK the ids the hub already chose (and sent to the worker). Spans are
    started one at a time on the event loop thread, so plain attributes do."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


class OtlpExport:
    def __init__(self, settings: TracingConfig) -> None:
        assert settings.otlp_endpoint is not None
        self._ids = _GivenIds()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            id_generator=self._ids)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=settings.otlp_endpoint, timeout=settings.export_timeout_s)))
        self.tracer = self.provider.get_tracer("spokehub")

    def export(self, call: Call, seconds: float) -> None:
        t = call.trace
        assert t is not None
        trace_id = int(t.trace_id, 16)
        self._ids.trace_id = trace_id
        self._ids.span_id = int(t.span_id, 16)
        context = None
        if t.parent_id is not None:
            state = TraceState.from_header([t.state]) if t.state else None
            parent = otel.SpanContext(trace_id, int(t.parent_id, 16), is_remote=True,
                                      trace_flags=otel.TraceFlags(t.flags),
                                      trace_state=state)
            context = otel.set_span_in_context(otel.NonRecordingSpan(parent))
        end_ns = time.time_ns()
        attributes: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "http.route": f"/v1{call.route}",
            "http.response.status_code": call.status,
            "spokehub.request_id": call.request_id,
            "spokehub.tenant": call.tenant,
            "spokehub.attempts": call.attempts,
            "spokehub.stream": call.stream,
            "spokehub.tier": call.tier,
        }
        if call.worker is not None:
            attributes["spokehub.worker"] = call.worker
            attributes["gen_ai.request.model"] = call.model
        if call.error is not None:
            attributes["error.type"] = call.error
        usage = call.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if usage.cached_tokens is not None:
                attributes["spokehub.usage.cached_tokens"] = usage.cached_tokens
        span = self.tracer.start_span(f"POST /v1{call.route}", context=context,
                                      kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=end_ns - int(seconds * 1e9))
        if call.status >= 500:
            span.set_status(Status(StatusCode.ERROR, call.error))
        span.end(end_time=end_ns)

    def close(self) -> None:
        """Send what is queued (bounded by the export timeout) and stop the thread."""
        self.provider.shutdown()
