"""W3C trace context through a real hub: what the worker receives (the fault worker
records request headers), the response header, the log line, and OTLP span export to
a receiver on 127.0.0.1.

No OTLP collector is available here: the export test runs a small HTTP server in the
test process that takes the OTLP/HTTP protobuf POST, decodes it with the
``opentelemetry-proto`` messages and checks the span that arrived.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hub.observe.settings import otel_installed
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.observe import post, request_lines, wait_for

MakeHub = Callable[..., HubProcess]
MakeFault = Callable[..., FaultWorker]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CLIENT_SPAN}-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
VALID = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")
BODY = {"model": "fault-model", "messages": [{"role": "user", "content": "hi"}]}


def last_headers(worker: FaultWorker) -> dict[str, str]:
    headers: list[dict[str, str]] = worker.stats()["headers"]
    return headers[-1]


def log_line(hub: HubProcess, request_id: str) -> dict[str, Any]:
    return wait_for(lambda: [x for x in request_lines(hub) if x["request_id"] == request_id],
                    30, "the request's log line")[0]


@pytest.mark.parametrize("stream", [False, True])
def test_client_trace_continues_at_the_worker(
        make_fault: MakeFault, make_hub: MakeHub, stream: bool) -> None:
    worker = make_fault()
    hub = make_hub(workers_config(worker))
    status, headers, _ = post(f"{hub.base_url}/chat/completions", {**BODY, "stream": stream},
                              {"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    assert status == 200
    assert headers["x-trace-id"] == TRACE
    got = last_headers(worker)
    m = VALID.fullmatch(got["traceparent"])
    assert m is not None
    trace_id, hub_span, flags = m.groups()
    assert (trace_id, flags) == (TRACE, "01")
    assert hub_span != CLIENT_SPAN  # the hub's own span is the worker's parent
    assert got["tracestate"] == TRACESTATE
    assert log_line(hub, headers["x-request-id"])["trace_id"] == TRACE


@pytest.mark.parametrize("bad", [
    f"00-{TRACE.upper()}-{CLIENT_SPAN}-01",
    f"00-{'0' * 32}-{CLIENT_SPAN}-01",
    f"ff-{TRACE}-{CLIENT_SPAN}-01",
    f"00-{TRACE}-{CLIENT_SPAN}-01-extra",
    "not a traceparent",
    "00-" + "a" * 3000,
])
def test_malformed_traceparent_starts_a_new_trace(
        make_fault: MakeFault, make_hub: MakeHub, bad: str) -> None:
    worker = make_fault()
    hub = make_hub(workers_config(worker))
    status, headers, _ = post(f"{hub.base_url}/chat/completions", BODY,
                              {"traceparent": bad, "tracestate": TRACESTATE})
    assert status == 200
    new = headers["x-trace-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new) and new != TRACE
    got = last_headers(worker)
    m = VALID.fullmatch(got["traceparent"])
    assert m is not None and m.group(1) == new
    assert "tracestate" not in got  # not read without a valid traceparent


def test_a_trace_starts_without_one_and_failover_keeps_it(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    broken, good = make_fault(mode="error500"), make_fault()
    hub = make_hub(workers_config(broken, good))
    status, headers, _ = post(f"{hub.base_url}/chat/completions", BODY)
    assert status == 200 and headers["x-spokehub-worker"] == "w1"
    trace_id = headers["x-trace-id"]
    seen = [last_headers(w)["traceparent"] for w in (broken, good)]
    assert seen[0] == seen[1]  # every attempt carries the hub's one span
    m = VALID.fullmatch(seen[0])
    assert m is not None and m.group(1) == trace_id


def test_errors_carry_the_trace_id(make_fault: MakeFault, make_hub: MakeHub) -> None:
    hub = make_hub(workers_config(make_fault()))
    status, headers, _ = post(f"{hub.base_url}/chat/completions",
                              {**BODY, "model": "no-such-model"},
                              {"traceparent": TRACEPARENT})
    assert status == 404 and headers["x-trace-id"] == TRACE
    assert log_line(hub, headers["x-request-id"])["trace_id"] == TRACE


# -- OTLP export -------------------------------------------------------------------------

class _Collector(BaseHTTPRequestHandler):
    posts: list[tuple[str, str, bytes]]  # set on the subclass per test

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    posts: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", posts
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not otel_installed(), reason="needs the otel extra (opentelemetry-sdk)")
def test_spans_are_exported_over_otlp_http(
        make_fault: MakeFault, make_hub: MakeHub,
        otlp_receiver: tuple[str, list[tuple[str, str, bytes]]]) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    endpoint, posts = otlp_receiver
    worker = make_fault()
    hub = make_hub(workers_config(worker, tracing={"otlp_endpoint": endpoint,
                                                   "service_name": "hub-under-test"}),
                   env={"OTEL_BSP_SCHEDULE_DELAY": "100"})  # export batches every 0.1 s
    status, headers, _ = post(f"{hub.base_url}/chat/completions", BODY,
                              {"traceparent": TRACEPARENT})
    assert status == 200
    hub_span = VALID.fullmatch(last_headers(worker)["traceparent"]).group(2)  # type: ignore[union-attr]

    def spans() -> list[Any]:
        out: list[Any] = []
        for path, content_type, body in list(posts):
            assert path == "/v1/traces" and content_type == "application/x-protobuf"
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((service, s) for s in ss.spans)
        return out

    service, span = wait_for(spans, 60, "a span at the OTLP receiver")[0]
    assert service["service.name"] == "hub-under-test"
    assert span.trace_id.hex() == TRACE
    assert span.span_id.hex() == hub_span  # the parent the worker was given
    assert span.parent_span_id.hex() == CLIENT_SPAN
    assert span.name == "POST /v1/chat/completions"
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["spokehub.request_id"].string_value == headers["x-request-id"]
    assert attrs["spokehub.worker"].string_value == "w0"
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["gen_ai.usage.output_tokens"].int_value == 1  # the fault worker's usage
    assert span.end_time_unix_nano > span.start_time_unix_nano
