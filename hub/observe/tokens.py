"""Token and queue metrics from the per-request record, counted in plain Python numbers
and turned into Prometheus families at scrape time.

The hub is one thread, so a request adds to dicts and lists without locks (about a
microsecond for every series it touches together); ``prometheus_client``'s own
Counter and Histogram take a lock per call and cost a few microseconds each.

Series (``model`` only for models a worker served, so clients cannot mint labels):

- ``spokehub_prompt_tokens_total{model,worker}``, ``spokehub_completion_tokens_total``,
  ``spokehub_cached_prompt_tokens_total``: what workers reported for whole answers;
- ``spokehub_tokens_unreported_total{model,worker}``: whole answers whose worker
  reported no counts (nothing else is counted for them);
- ``spokehub_time_to_first_token_seconds{model}``: from the hub receiving the request to
  the first token reaching the client (streams); for a non-stream answer, the answer's
  time less the worker's reported generation time (llama.cpp ``timings.predicted_ms``,
  Ollama ``eval_duration``), not observed without it;
- ``spokehub_inter_token_seconds{model}``: gaps between batches of stream events;
- ``spokehub_generation_tokens_per_second{model}``: the worker's reported rate, else
  completion tokens over the stream's first-to-last event time;
- ``spokehub_queue_wait_seconds``: from the request being checked to its first attempt
  going out (tenant rate-limit queue, capacity queue, routing);
- ``spokehub_tenant_tokens_total{tenant,kind}`` and
  ``spokehub_admission_rejected_total{tenant,reason}``: per tenant, the first
  ``metrics.max_tenants`` tenants seen by name, the rest as ``other``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.forward.call import Call
from hub.observe.settings import MetricsConfig
from hub.observe.usage import INTER_TOKEN_BOUNDS

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
                120.0, 300.0, 600.0)
GEN_RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0,
                    500.0, 1000.0, 2000.0, 5000.0)
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0, 60.0, 120.0)
OTHER_TENANT = "other"
# Errors that mean admission turned the request away, by reason label.
ADMISSION_REASONS = {"rate_limit_exceeded": "rate_limit", "workers_busy": "capacity",
                     "shed": "shed"}
PROMPT, COMPLETION, CACHED, UNREPORTED = range(4)


class Hist:
    """Bucket counts (non-cumulative; the last is above every bound) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def merge(self, counts: Sequence[int], total: float) -> None:
        mine = self.counts
        for i, n in enumerate(counts):
            if n:
                mine[i] += n
        self.sum += total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class TokenMetrics(Collector):
    """Counts tokens, first-token and inter-token times, generation rates, queue waits
    and per-tenant usage from each finished request (:meth:`observe`)."""

    def __init__(self, settings: MetricsConfig | None = None) -> None:
        self.settings = settings or MetricsConfig()
        self.tokens: dict[tuple[str, str], list[int]] = {}  # (model, worker) -> counts
        self.ttft: dict[str, Hist] = {}
        self.inter_token: dict[str, Hist] = {}
        self.gen_rate: dict[str, Hist] = {}
        self.queue_wait = Hist(QUEUE_WAIT_BUCKETS)
        self.tenant_tokens: dict[tuple[str, str], int] = {}
        self.rejected: dict[tuple[str, str], int] = {}
        self._tenants: set[str] = set()  # tenants with their own label

    def configure(self, settings: MetricsConfig) -> None:
        """A reload: tenants already labelled keep their label."""
        self.settings = settings

    def tenant_label(self, tenant: str) -> str:
        """``tenant`` while fewer than ``metrics.max_tenants`` are labelled, else other."""
        if tenant in self._tenants:
            return tenant
        if len(self._tenants) < self.settings.max_tenants:
            self._tenants.add(tenant)
            return tenant
        return OTHER_TENANT

    def observe(self, call: Call, end: float) -> None:
        """Account one finished request; ``end`` is its loop time at the end."""
        if call.sent_at and call.queued_at:
            self.queue_wait.observe(max(0.0, call.sent_at - call.queued_at))
        elif call.queued_at and call.error == "workers_busy":
            self.queue_wait.observe(max(0.0, end - call.queued_at))
        if call.error is not None:
            reason = ADMISSION_REASONS.get(call.error)
            if reason is not None:
                key = (self.tenant_label(call.tenant), reason)
                self.rejected[key] = self.rejected.get(key, 0) + 1
        worker = call.worker
        if worker is None:
            return
        model = call.model
        if call.first_token_at is not None:
            hist = self.ttft.get(model)
            if hist is None:
                hist = self.ttft[model] = Hist(TTFT_BUCKETS)
            hist.observe(max(0.0, call.first_token_at - call.started))
        tap = call.tap
        if tap is not None and tap.gaps:
            hist = self.inter_token.get(model)
            if hist is None:
                hist = self.inter_token[model] = Hist(INTER_TOKEN_BOUNDS)
            hist.merge(tap.gap_counts, tap.gap_sum)
        if not call.answered:
            return
        key2 = (model, worker)
        row = self.tokens.get(key2)
        if row is None:
            row = self.tokens[key2] = [0, 0, 0, 0]
        usage = call.usage
        if usage is None:
            row[UNREPORTED] += 1
            return
        row[PROMPT] += usage.prompt_tokens
        row[COMPLETION] += usage.completion_tokens
        if usage.cached_tokens:
            row[CACHED] += usage.cached_tokens
        rate = usage.gen_tokens_per_s
        if rate is not None:
            hist = self.gen_rate.get(model)
            if hist is None:
                hist = self.gen_rate[model] = Hist(GEN_RATE_BUCKETS)
            hist.observe(rate)
        tenant = self.tenant_label(call.tenant)
        counts = self.tenant_tokens
        for kind, n in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens),
                        ("cached", usage.cached_tokens or 0)):
            counts[tenant, kind] = counts.get((tenant, kind), 0) + n

    # -- scrape ------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        labels = ["model", "worker"]
        families = [
            CounterMetricFamily("spokehub_prompt_tokens_total",
                                "Prompt tokens workers reported, cached ones included",
                                labels=labels),
            CounterMetricFamily("spokehub_completion_tokens_total",
                                "Completion tokens workers reported", labels=labels),
            CounterMetricFamily("spokehub_cached_prompt_tokens_total",
                                "Prompt tokens served from the worker's prompt cache",
                                labels=labels),
            CounterMetricFamily("spokehub_tokens_unreported_total",
                                "Whole answers whose worker reported no token counts",
                                labels=labels),
        ]
        for (model, worker), row in self.tokens.items():
            for family, value in zip(families, row, strict=True):
                family.add_metric([model, worker], float(value))
        yield from families
        for name, doc, hists in (
                ("spokehub_time_to_first_token_seconds",
                 "Time from the hub receiving a request to its first token", self.ttft),
                ("spokehub_inter_token_seconds",
                 "Time between batches of stream events from the worker", self.inter_token),
                ("spokehub_generation_tokens_per_second",
                 "Generation rate of an answer, tokens per second", self.gen_rate)):
            by_model = HistogramMetricFamily(name, doc, labels=["model"])
            for model, hist in hists.items():
                by_model.add_metric([model], hist.buckets(), hist.sum)
            yield by_model
        wait = HistogramMetricFamily("spokehub_queue_wait_seconds",
                                     "Time a request waited in the hub before its first "
                                     "attempt (rate-limit and capacity queues)")
        wait.add_metric([], self.queue_wait.buckets(), self.queue_wait.sum)
        yield wait
        tenant = CounterMetricFamily("spokehub_tenant_tokens_total",
                                     "Tokens by tenant (kind: prompt, completion, cached)",
                                     labels=["tenant", "kind"])
        for (name, kind), value in self.tenant_tokens.items():
            tenant.add_metric([name, kind], float(value))
        yield tenant
        rejected = CounterMetricFamily("spokehub_admission_rejected_total",
                                       "Requests turned away by admission, by tenant and "
                                       "reason (rate_limit, capacity, shed)",
                                       labels=["tenant", "reason"])
        for (name, reason), value in self.rejected.items():
            rejected.add_metric([name, reason], float(value))
        yield rejected

    def describe(self) -> Iterator[Metric]:
        return iter(())
