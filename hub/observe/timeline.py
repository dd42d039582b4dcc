"""The last 15 minutes of traffic in 10-second buckets, for the status page.

A ring of :data:`BUCKETS` buckets, reused in place: memory is bounded by the ring's
length times the error kinds and workers seen in a bucket (both bounded by the hub
itself: error codes are the hub's, worker names the registry's). Recording a request
is a few dict and list updates; reading (:meth:`Timeline.snapshot`) builds plain JSON
for ``GET /admin/timeline``.

Per worker it also answers "how much of this worker's prompts hit its prompt cache
lately" (:meth:`Timeline.worker_tokens`), which a cache-aware router or the status page
can read; per request the same counts are on the call record (``Call.usage``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from hub.forward.call import Call
from hub.observe.tokens import TTFT_BUCKETS

BUCKET_S = 10.0
BUCKETS = 90  # 15 minutes
REQUESTS, PROMPT, COMPLETION, CACHED, CACHE_KNOWN_PROMPT = range(5)


class _Bucket:
    __slots__ = ("completion", "errors", "prompt", "requests", "slot", "ttft", "workers")

    def __init__(self) -> None:
        self.slot = -1
        self.requests = 0
        self.prompt = 0
        self.completion = 0
        self.errors: dict[str, int] = {}
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.workers: dict[str, list[int]] = {}

    def reset(self, slot: int) -> None:
        self.slot = slot
        self.requests = self.prompt = self.completion = 0
        self.errors.clear()
        for i in range(len(self.ttft)):
            self.ttft[i] = 0
        self.workers.clear()


@dataclass(frozen=True, slots=True)
class WorkerTokens:
    """One worker's reported tokens over a recent window."""

    requests: int  # answers the hub relayed (token counts reported or not)
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    window_s: float

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.window_s

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.window_s


@dataclass(frozen=True, slots=True)
class _CacheShare:
    cached: int
    prompt: int  # prompt tokens of answers whose worker said how many were cached

    @property
    def ratio(self) -> float | None:
        return self.cached / self.prompt if self.prompt else None


def p95(counts: list[int], bounds: tuple[float, ...] = TTFT_BUCKETS) -> float | None:
    """The 95th percentile of bucketed samples, interpolated inside its bucket the way
    Prometheus' ``histogram_quantile`` does; None without samples."""
    total = sum(counts)
    if not total:
        return None
    rank = 0.95 * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return bounds[-1]  # above the last bound: say the last bound, as Prometheus
            lo = bounds[i - 1] if i else 0.0
            return lo + (bounds[i] - lo) * (rank - seen) / n
        seen += n
    return bounds[-1]


class Timeline:
    def __init__(self, bucket_s: float = BUCKET_S, buckets: int = BUCKETS) -> None:
        self.bucket_s = bucket_s
        self.ring = [_Bucket() for _ in range(buckets)]

    def _bucket(self, now: float) -> _Bucket:
        slot = int(now // self.bucket_s)
        bucket = self.ring[slot % len(self.ring)]
        if bucket.slot != slot:
            bucket.reset(slot)
        return bucket

    def record(self, call: Call, now: float) -> None:
        """Add one finished request; ``now`` is a loop time (``Call.started``'s clock)."""
        b = self._bucket(now)
        b.requests += 1
        if call.error is not None:
            b.errors[call.error] = b.errors.get(call.error, 0) + 1
        if call.first_token_at is not None:
            b.ttft[bisect_left(TTFT_BUCKETS, call.first_token_at - call.started)] += 1
        worker = call.worker
        if worker is None or not call.answered:
            return
        row = b.workers.get(worker)
        if row is None:
            row = b.workers[worker] = [0, 0, 0, 0, 0]
        row[REQUESTS] += 1
        usage = call.usage
        if usage is not None:
            b.prompt += usage.prompt_tokens
            b.completion += usage.completion_tokens
            row[PROMPT] += usage.prompt_tokens
            row[COMPLETION] += usage.completion_tokens
            if usage.cached_tokens is not None:
                row[CACHED] += usage.cached_tokens
                row[CACHE_KNOWN_PROMPT] += usage.prompt_tokens

    def _recent(self, now: float, window_s: float) -> list[tuple[_Bucket, float]]:
        """Buckets inside the window ending at ``now``, oldest first, each with the
        seconds of it that have passed (the current bucket is partial)."""
        slot = int(now // self.bucket_s)
        count = max(1, min(len(self.ring), round(window_s / self.bucket_s)))
        out: list[tuple[_Bucket, float]] = []
        for s in range(slot - count + 1, slot + 1):
            b = self.ring[s % len(self.ring)]
            span = min(self.bucket_s, max(1.0, now - s * self.bucket_s))
            out.append((b if b.slot == s else _EMPTY, span))
        return out

    def worker_tokens(self, now: float, window_s: float = 60.0) -> dict[str, WorkerTokens]:
        """Per worker: answers and reported tokens over the last ``window_s``."""
        sums: dict[str, list[int]] = {}
        seconds = 0.0
        for b, span in self._recent(now, window_s):
            seconds += span
            for name, row in b.workers.items():
                acc = sums.setdefault(name, [0, 0, 0, 0, 0])
                for i, v in enumerate(row):
                    acc[i] += v
        return {name: WorkerTokens(r[REQUESTS], r[PROMPT], r[COMPLETION], r[CACHED], seconds)
                for name, r in sums.items()}

    def cached_ratio(self, worker: str, now: float, window_s: float = 900.0) -> float | None:
        """Share of ``worker``'s prompt tokens served from its prompt cache over the
        window, counting only answers that said; None if none did."""
        return self._cache_shares(now, window_s).get(worker, _CacheShare(0, 0)).ratio

    def _cache_shares(self, now: float, window_s: float) -> dict[str, _CacheShare]:
        sums: dict[str, list[int]] = {}
        for b, _ in self._recent(now, window_s):
            for name, row in b.workers.items():
                acc = sums.setdefault(name, [0, 0])
                acc[0] += row[CACHED]
                acc[1] += row[CACHE_KNOWN_PROMPT]
        return {name: _CacheShare(c, p) for name, (c, p) in sums.items()}

    def snapshot(self, now: float) -> dict[str, object]:
        """Series over the whole ring (oldest first, the current bucket last) and per
        worker figures, as JSON-ready values. Rates are per second of the bucket that
        has passed."""
        recent = self._recent(now, self.bucket_s * len(self.ring))
        slot = int(now // self.bucket_s)
        kinds = sorted({k for b, _ in recent for k in b.errors})
        starts = [round((slot - len(recent) + 1 + i) * self.bucket_s - now, 1)
                  for i in range(len(recent))]
        per_worker = self.worker_tokens(now, 60.0)
        shares = self._cache_shares(now, self.bucket_s * len(self.ring))
        workers: dict[str, dict[str, object]] = {}
        for name in sorted(per_worker.keys() | shares.keys()):
            last_min = per_worker.get(name)
            share = shares.get(name, _CacheShare(0, 0))
            workers[name] = _worker_json(last_min, share)
        hub = _worker_json(
            WorkerTokens(sum(t.requests for t in per_worker.values()),
                         sum(t.prompt_tokens for t in per_worker.values()),
                         sum(t.completion_tokens for t in per_worker.values()),
                         sum(t.cached_tokens for t in per_worker.values()),
                         next(iter(per_worker.values())).window_s)
            if per_worker else None,
            _CacheShare(sum(s.cached for s in shares.values()),
                        sum(s.prompt for s in shares.values())))
        ttft = [p95(b.ttft) for b, _ in recent]
        return {
            "bucket_s": self.bucket_s,
            "window_s": self.bucket_s * len(self.ring),
            "starts_s": starts,  # each bucket's start, seconds before now (negative)
            "requests_per_s": [round(b.requests / span, 3) for b, span in recent],
            "errors_per_s": {k: [round(b.errors.get(k, 0) / span, 3) for b, span in recent]
                             for k in kinds},
            "ttft_p95_s": [None if v is None else round(v, 4) for v in ttft],
            "completion_tokens_per_s": [round(b.completion / span, 3) for b, span in recent],
            "prompt_tokens_per_s": [round(b.prompt / span, 3) for b, span in recent],
            "workers": workers,  # token rates over the last minute, cache hits over 15
            "hub": hub,  # the same for all workers together
        }


def _worker_json(last_min: WorkerTokens | None, share: _CacheShare) -> dict[str, object]:
    ratio = share.ratio
    return {
        "completion_tokens_per_s": round(last_min.completion_tokens_per_s, 3)
        if last_min else 0.0,
        "prompt_tokens_per_s": round(last_min.prompt_tokens_per_s, 3) if last_min else 0.0,
        "cached_prompt_ratio": None if ratio is None else round(ratio, 4),
        "cached_prompt_tokens": share.cached,
    }


_EMPTY = _Bucket()
