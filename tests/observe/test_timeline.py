"""The status page's 15-minute ring of 10-second buckets (hub.observe.timeline)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.forward.call import Call
from hub.observe.timeline import BUCKETS, Timeline, p95
from hub.observe.tokens import TTFT_BUCKETS
from hub.observe.usage import Usage

T0 = 10_000.0  # a loop time at the start of a bucket


def done(worker: str | None = "w0", usage: Usage | None = None, error: str | None = None,
         ttft: float | None = None, started: float = T0) -> Call:
    return Call(request_id="r", route="/chat/completions", model="m", worker=worker,
                status=200 if error is None else 502, error=error, started=started,
                answered=worker is not None and error is None, usage=usage,
                first_token_at=None if ttft is None else started + ttft)


def test_series_over_the_window() -> None:
    tl = Timeline()
    for _ in range(20):
        tl.record(done(usage=Usage(10, 30, 5), ttft=0.2), T0 + 1)
    tl.record(done(error="upstream_timeout"), T0 + 2)
    tl.record(done(worker=None, error="rate_limit_exceeded"), T0 + 15)
    snap: Any = tl.snapshot(T0 + 15)  # 5 s into the second bucket
    assert len(snap["starts_s"]) == BUCKETS
    assert snap["starts_s"][-2:] == [-15.0, -5.0]
    assert snap["requests_per_s"][-2:] == [2.1, 0.2]
    assert snap["requests_per_s"][0] == 0.0
    assert snap["errors_per_s"] == {
        "rate_limit_exceeded": [0.0] * (BUCKETS - 1) + [0.2],
        "upstream_timeout": [0.0] * (BUCKETS - 2) + [0.1, 0.0]}
    assert snap["completion_tokens_per_s"][-2] == 60.0
    assert snap["prompt_tokens_per_s"][-2] == 20.0
    ttft = snap["ttft_p95_s"]
    assert ttft[-1] is None and 0.1 < ttft[-2] <= 0.25
    w0 = snap["workers"]["w0"]
    assert w0["cached_prompt_ratio"] == 0.5 and w0["cached_prompt_tokens"] == 100
    # the last minute: five whole buckets and the five seconds of the current one
    assert w0["completion_tokens_per_s"] == pytest.approx(600 / 55, abs=1e-3)
    assert snap["hub"] == w0
    json.dumps(snap)  # plain JSON


def test_ring_is_reused_and_old_buckets_vanish() -> None:
    tl = Timeline()
    tl.record(done(usage=Usage(1, 1, 1)), T0)
    later = T0 + BUCKETS * 10 + 5  # the same ring slot, a full ring later
    tl.record(done(), later)
    snap: Any = tl.snapshot(later)
    assert sum(snap["requests_per_s"]) == pytest.approx(0.2)
    assert snap["completion_tokens_per_s"][-1] == 0.0
    # Memory: one bucket object per slot, whatever the traffic.
    for i in range(10 * BUCKETS):
        tl.record(done(worker=f"w{i % 3}"), T0 + i * 3.0)
    assert len(tl.ring) == BUCKETS
    assert all(len(b.workers) <= 3 for b in tl.ring)


def test_worker_tokens_and_cache_ratio_for_routing() -> None:
    tl = Timeline()
    tl.record(done("a", Usage(100, 10, 90)), T0 + 1)
    tl.record(done("a", Usage(100, 10, 10)), T0 + 200)
    tl.record(done("b", Usage(50, 5, None)), T0 + 200)  # says nothing of its cache
    tl.record(done("c"), T0 + 200)  # no counts at all
    now = T0 + 205
    recent = tl.worker_tokens(now, window_s=60)
    assert recent["a"].completion_tokens == 10 and recent["a"].cached_tokens == 10
    assert recent["c"].requests == 1 and recent["c"].prompt_tokens == 0
    assert tl.cached_ratio("a", now) == pytest.approx(100 / 200)
    assert tl.cached_ratio("a", now, window_s=60) == pytest.approx(0.1)
    assert tl.cached_ratio("b", now) is None
    assert tl.cached_ratio("nobody", now) is None


def test_p95_like_histogram_quantile() -> None:
    assert p95([0] * (len(TTFT_BUCKETS) + 1)) is None
    counts = [0] * (len(TTFT_BUCKETS) + 1)
    counts[TTFT_BUCKETS.index(1.0)] = 100  # all in (0.5, 1]
    assert p95(counts) == pytest.approx(0.5 + 0.5 * 0.95)
    counts = [0] * (len(TTFT_BUCKETS) + 1)
    counts[-1] = 3  # above every bound
    assert p95(counts) == TTFT_BUCKETS[-1]
