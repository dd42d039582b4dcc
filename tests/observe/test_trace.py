"""W3C trace context parsing and the hub's span (hub.observe.trace)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.observe.settings import TracingConfig
from hub.observe.trace import (
    Tracer,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    parse_tracestate,
    start_trace,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{PARENT}-01"
HEADER = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]")


def test_valid_traceparent_continues_the_trace() -> None:
    t = start_trace(VALID, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    assert t.trace_id == TRACE
    assert t.parent_id == PARENT
    assert t.span_id != PARENT and re.fullmatch(r"[0-9a-f]{16}", t.span_id)
    assert t.sampled
    assert t.traceparent == f"00-{TRACE}-{t.span_id}-01"
    assert t.state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert not start_trace(f"00-{TRACE}-{PARENT}-00", None).sampled
    # Only the sampled bit is defined for version 00; others are not passed on.
    assert start_trace(f"00-{TRACE}-{PARENT}-ff", None).traceparent.endswith("-01")


@pytest.mark.parametrize("value", [
    "",
    "garbage",
    f"00-{TRACE.upper()}-{PARENT}-01",  # uppercase hex
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
    f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
    f"00-{TRACE}-{PARENT}-01x",
    f"00-{TRACE[:-1]}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}0-01",
    f"00_{TRACE}_{PARENT}_01",
    f"0g-{TRACE}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-1",
    f"00-{TRACE}-{PARENT}-01\n",
    f"00-{TRACE}-{PARENT}-01\u00e9",
])
def test_invalid_traceparent_starts_a_new_trace(value: str) -> None:
    assert parse_traceparent(value) is None
    t = start_trace(value, "congo=t61rcWkgMzE")
    assert t.trace_id != TRACE and t.parent_id is None
    assert t.state is None  # tracestate is never read without a valid traceparent
    assert HEADER.fullmatch(t.traceparent)


def test_later_versions_may_add_fields() -> None:
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-what-the-future-holds") == (
        TRACE, PARENT, 1)
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-00") == (TRACE, PARENT, 0)
    assert parse_traceparent(f" 00-{TRACE}-{PARENT}-01\t") == (TRACE, PARENT, 1)


@pytest.mark.parametrize(("value", "expected"), [
    ("rojo=00f067aa0ba902b7", "rojo=00f067aa0ba902b7"),
    ("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ("a=1,,b=2", "a=1,b=2"),  # empty members are allowed, and dropped
    ("tenant@vendor=x", "tenant@vendor=x"),
    ("a=1,a=2", None),  # duplicate key
    ("A=1", None),  # keys are lowercase
    ("a=1=2", None),
    ("a=", None),
    ("a= 1 ", "a= 1"),  # spaces around a member are not part of it
    ("a=1\t2", None),
    ("a=\u00e9", None),
    (",".join(f"k{i}=v" for i in range(33)), None),  # at most 32 members
    ("k=" + "v" * 600, None),
    ("", None),
])
def test_tracestate(value: str, expected: str | None) -> None:
    assert parse_tracestate(value) == expected


def test_new_ids() -> None:
    ids = {new_trace_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and i != "0" * 32 for i in ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", new_span_id()) for _ in range(1000))


def test_new_traces_are_sampled_only_when_exporting() -> None:
    t = start_trace(None, None)
    assert not t.sampled and t.parent_id is None
    assert start_trace(None, None, sample_new=True).sampled


def test_tracer_without_export_is_only_context() -> None:
    tracer = Tracer(TracingConfig())
    assert tracer.exporter is None
    t = tracer.start({"traceparent": VALID, "tracestate": "a=1"})
    assert (t.trace_id, t.parent_id, t.state) == (TRACE, PARENT, "a=1")
    assert tracer.start({"tracestate": "a=1"}).state is None
    tracer.close()


@given(st.text(max_size=120), st.text(max_size=80))
def test_any_header_gives_a_valid_trace(traceparent: str, tracestate: str) -> None:
    t = start_trace(traceparent, tracestate)
    assert HEADER.fullmatch(t.traceparent)
    if t.state is not None:
        assert parse_tracestate(t.state) == t.state
