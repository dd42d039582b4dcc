#!/usr/bin/env python3
"""CPU cost of the hub's token accounting and tracing, in process (no network).

Each figure is the best of several rounds of many calls, so other load on the machine
inflates it little. What it measures:

- the SSE relay per batch of events, with and without the accounting tap (the tap
  keeps the last two batches and buckets the gap between batches);
- reading token counts once at the end: a non-stream llama.cpp answer, the last events
  of a llama.cpp stream;
- per request: the token metrics and the status page's timeline;
- trace context per request with span export off (the default): no ``traceparent``,
  a valid one, an invalid one; and, if the ``otel`` extra is installed, building and
  queueing one span with export on, to a throwaway OTLP/HTTP receiver on 127.0.0.1 that
  answers 200 (the SDK's export thread runs meanwhile, as in the hub).

Usage: python -m bench.observe_cost [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import uvloop

from hub.forward.call import Call
from hub.forward.deadline import Deadline
from hub.forward.relay import relay_events
from hub.observe.settings import TracingConfig, otel_installed
from hub.observe.timeline import Timeline
from hub.observe.tokens import TokenMetrics
from hub.observe.trace import Tracer
from hub.observe.usage import StreamTap, read_usage

EVENT = (b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" token"}}],'
         b'"created":1796010396,"id":"chatcmpl-sk1NLUWoiaTs5glQYe4ixoi71G3yXrKu","model":'
         b'"tiny","system_fingerprint":"b1-0c1e570","object":"chat.completion.chunk"}\n\n')
FINAL = (b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":'
         b'1796010396,"id":"chatcmpl-sk1NLUWoiaTs5glQYe4ixoi71G3yXrKu","model":"tiny",'
         b'"system_fingerprint":"b1-0c1e570","object":"chat.completion.chunk","timings":'
         b'{"cache_n":16,"prompt_n":1,"prompt_ms":0.939,"prompt_per_token_ms":0.939,'
         b'"prompt_per_second":1064.96,"predicted_n":3,"predicted_ms":1.653,'
         b'"predicted_per_token_ms":0.8265,"predicted_per_second":1209.92}}\n\n'
         b"data: [DONE]\n\n")
ANSWER = (b'{"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant",'
          b'"content":"' + b"word " * 100 + b'"}}],"created":1796010396,"model":"tiny",'
          b'"system_fingerprint":"b1-0c1e570","object":"chat.completion","usage":'
          b'{"completion_tokens":100,"prompt_tokens":17,"total_tokens":117,'
          b'"prompt_tokens_details":{"cached_tokens":16}},"id":"chatcmpl-97HkOe7eB",'
          b'"timings":{"cache_n":16,"prompt_n":1,"prompt_ms":2.31,"prompt_per_token_ms":'
          b'0.1358,"prompt_per_second":7359.3,"predicted_n":100,"predicted_ms":83.368,'
          b'"predicted_per_token_ms":0.842,"predicted_per_second":1187.6}}')
VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
INVALID = "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"


def best_ns(fn: Callable[[], object], n: int, rounds: int) -> float:
    """Best per-call time over ``rounds`` rounds of ``n`` calls, in nanoseconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


class _Source:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.i = 0

    async def readany(self) -> bytes:
        i = self.i
        self.i += 1
        return self.chunks[i] if i < len(self.chunks) else b""


class _Out:
    async def write(self, data: bytes) -> None:
        return None


async def relay_ns_per_event(events: int, rounds: int, tapped: bool) -> float:
    chunks = [EVENT] * events + [FINAL]
    best = float("inf")
    for _ in range(rounds):
        source = _Source(chunks)
        tap = StreamTap(0.0) if tapped else None
        async with Deadline(60.0, 600.0) as deadline:
            start = time.perf_counter_ns()
            await relay_events(source, _Out(), source.chunks[0],  # type: ignore[arg-type]
                               deadline, tap=tap)
            best = min(best, (time.perf_counter_ns() - start) / (events + 1))
    return best


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rounds = args.rounds
    us = 1000.0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        plain = runner.run(relay_ns_per_event(20000, rounds, False))
        tapped = runner.run(relay_ns_per_event(20000, rounds, True))
    print(f"relay, per batch of one event: {plain / us:.3f} us without the tap, "
          f"{tapped / us:.3f} us with it (+{(tapped - plain) / us:.3f} us)")

    tail = EVENT + FINAL
    print(f"read_usage, non-stream answer ({len(ANSWER)} B): "
          f"{best_ns(lambda: read_usage(ANSWER), 20000, rounds) / us:.2f} us")
    print(f"read_usage, stream's last events ({len(tail)} B): "
          f"{best_ns(lambda: read_usage(tail), 20000, rounds) / us:.2f} us")

    usage = read_usage(ANSWER)
    metrics, timeline = TokenMetrics(), Timeline()
    tap = StreamTap(1.0)
    for i in range(50):
        tap.seen(EVENT, 1.0 + i * 0.02)
    call = Call(request_id="r", route="/chat/completions", model="tiny", worker="w0",
                status=200, started=1.0, queued_at=1.0001, sent_at=1.0002,
                first_token_at=1.01, answered=True, usage=usage, tap=tap)
    def account() -> None:
        metrics.observe(call, 2.0)
        timeline.record(call, 2.0)

    print(f"token metrics + timeline per stream request: "
          f"{best_ns(account, 20000, rounds) / us:.2f} us")

    off = Tracer(TracingConfig())
    for label, headers in (("no traceparent", {}), ("valid traceparent", {"traceparent": VALID}),
                           ("invalid traceparent", {"traceparent": INVALID})):
        start = best_ns(lambda h=headers: off.start(h), 50000, rounds)  # type: ignore[misc]
        trace = off.start(headers)
        fmt = best_ns(lambda t=trace: t.traceparent, 50000, rounds)  # type: ignore[misc]
        print(f"tracing off, {label}: start {start / us:.2f} us, traceparent header "
              f"{fmt / us:.2f} us")
    call.trace = off.start({})
    print(f"tracing off, finish: {best_ns(lambda: off.finish(call, 1.0), 50000, rounds) / us:.3f} us")  # noqa: E501

    if otel_installed():
        # The SDK drops spans when its queue (2048) is full, and says so each time.
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        on = Tracer(TracingConfig(
            otlp_endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1/traces"))
        call.trace = on.start({"traceparent": VALID})
        print(f"tracing on (OTLP), finish = build and queue one span: "
              f"{best_ns(lambda: on.finish(call, 1.0), 1000, rounds) / us:.1f} us")
        on.close()
        server.shutdown()
    else:
        print("tracing on: the otel extra is not installed; skipped")


if __name__ == "__main__":
    main()
