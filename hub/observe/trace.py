"""W3C Trace Context across the hub's hop: ``traceparent`` and ``tracestate``.

Each request the hub serves is one span. Its trace id is the client's, when the client
sent a valid ``traceparent``, else a new one; its span id is new. The worker gets
``traceparent: 00-<trace id>-<the hub's span id>-<flags>`` (every attempt of a
failover carries the same one) and the client's ``tracestate`` unchanged. The client
gets the trace id back in ``X-Trace-Id``, and the request log line has it.

Parsing is strict (https://www.w3.org/TR/trace-context/): version ``00`` is exactly
``00-<32 hex>-<16 hex>-<2 hex>``, lowercase, with neither id all zeros; a later version
may carry more fields after a dash, version ``ff`` is invalid. An invalid or absent
``traceparent`` starts a new trace, and its ``tracestate`` is dropped with it (the
spec forbids reading tracestate without a valid traceparent); an invalid
``tracestate`` alone is dropped. Never an error for the client.

New ids come from ``os.urandom`` (about 0.45 µs each here, the same as formatting
``random.getrandbits``), so they are unpredictable as well as unique. Nothing here
depends on the optional OTLP export (:mod:`hub.observe.otlp`).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from hub.observe.settings import TracingConfig

if TYPE_CHECKING:
    from hub.forward.call import Call

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                          re.ASCII | re.DOTALL)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# tracestate list members: key=value; keys simple or tenant@system; values printable
# ASCII without ',' and '=', not ending in a space.
_TS_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_TS_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TS_MEMBER = re.compile(rf"{_TS_KEY}={_TS_VALUE}", re.ASCII)
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_LEN = 512  # what the spec asks vendors to propagate at least
SAMPLED = 0x01
_urandom = os.urandom


def new_trace_id() -> str:
    while True:
        value = _urandom(16).hex()
        if value != _ZERO_TRACE:
            return value


def new_span_id() -> str:
    while True:
        value = _urandom(8).hex()
        if value != _ZERO_SPAN:
            return value


def parse_traceparent(value: str | None) -> tuple[str, str, int] | None:
    """(trace id, parent span id, flags) of a valid ``traceparent``, else None."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)


def parse_tracestate(value: str | None) -> str | None:
    """``tracestate`` as received if every list member is valid, else None. Empty
    members (``a=1,,b=2``) are allowed by the spec and dropped."""
    if not value or len(value) > MAX_TRACESTATE_LEN:
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    keys: set[str] = set()
    for member in members:
        if _TS_MEMBER.fullmatch(member) is None:
            return None
        key = member.partition("=")[0]
        if key in keys:
            return None
        keys.add(key)
    return ",".join(members)


class Trace:
    """The hub's span of one request: ids, the client's parent span and flags."""

    __slots__ = ("flags", "parent_id", "span_id", "state", "trace_id")

    def __init__(self, trace_id: str, span_id: str, parent_id: str | None = None,
                 flags: int = 0, state: str | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # the client's span, if it sent one
        self.flags = flags
        self.state = state

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def traceparent(self) -> str:
        """What the worker gets: the hub's span as its parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags & 0xFF:02x}"

    def __repr__(self) -> str:
        return f"<Trace {self.traceparent}>"


def start_trace(traceparent: str | None, tracestate: str | None, *,
                sample_new: bool = False) -> Trace:
    """The hub's span for a request carrying these headers (each may be absent).

    A continued trace keeps the client's flags (its sampling decision); a new one is
    sampled if ``sample_new`` (span export is on and picked this trace)."""
    parent = parse_traceparent(traceparent) if traceparent else None
    if parent is None:
        return Trace(new_trace_id(), new_span_id(), flags=SAMPLED if sample_new else 0)
    trace_id, parent_id, flags = parent
    state = parse_tracestate(tracestate) if tracestate else None
    # Only the sampled bit is defined for version 00; unknown bits are not passed on.
    return Trace(trace_id, new_span_id(), parent_id, flags & SAMPLED, state)


class Tracer:
    """Trace context for each request, and span export when ``tracing.otlp_endpoint``
    is set. With export off (the default) this is :func:`start_trace` and nothing
    else: no SDK imported, no span objects, no background thread."""

    def __init__(self, settings: TracingConfig) -> None:
        self.settings = settings
        self.exporter: SpanExport | None = None
        if settings.otlp_endpoint:
            from hub.observe.otlp import OtlpExport  # noqa: PLC0415 - the optional otel extra

            self.exporter = OtlpExport(settings)

    def start(self, headers: Mapping[str, str]) -> Trace:
        traceparent = headers.get("traceparent")
        tracestate = headers.get("tracestate") if traceparent else None
        if self.exporter is None:
            return start_trace(traceparent, tracestate)
        ratio = self.settings.sample_ratio
        return start_trace(traceparent, tracestate,
                           sample_new=ratio >= 1.0 or random.random() < ratio)

    def finish(self, call: Call, seconds: float) -> None:
        """Export the request's span if export is on and its trace is sampled."""
        exporter = self.exporter
        if exporter is not None and call.trace is not None and call.trace.sampled:
            exporter.export(call, seconds)

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None


class SpanExport(Protocol):
    def export(self, call: Call, seconds: float) -> None: ...

    def close(self) -> None: ...
