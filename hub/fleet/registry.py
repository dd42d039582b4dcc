"""The registry: single owner of worker state.

Writers: static config, the active prober, passive outcomes from the proxy (and,
later, agent heartbeats). Readers (routing) take the candidate list for a model,
which is plain sync code over in-memory state: no awaits, no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from hub.config.workers import WorkerSpec
from hub.probing.result import ProbeResult

__all__ = ["ProbeResult", "Registry", "Worker"]  # ProbeResult: what apply_probe takes

EWMA_ALPHA = 0.2


@dataclass(slots=True)
class Ewma:
    """An exponentially weighted moving average and the number of samples behind it."""

    value: float | None = None
    samples: int = 0

    def add(self, sample: float) -> None:
        self.samples += 1
        prev = self.value
        self.value = sample if prev is None else prev + EWMA_ALPHA * (sample - prev)


@dataclass(slots=True, eq=False)
class Worker:
    spec: WorkerSpec
    healthy: bool = False
    detail: str = "not probed yet"
    discovered_models: frozenset[str] = frozenset()
    in_flight: int = 0
    remote_in_flight: int = 0  # other hubs' requests on it (shared state; max_concurrency)
    slots_total: int | None = None
    slots_busy: int | None = None
    # Time to first byte (TTFB): response headers of a non-stream answer, the first data
    # event of a stream; never the whole request, whose length depends on max_tokens.
    ewma_latency_s: float | None = None  # TTFB over every model, for display
    latency_samples: int = 0  # answers behind ewma_latency_s
    ttfb_by_model: dict[str, Ewma] = field(default_factory=dict)  # compare like with like
    draining: bool = False
    source: str = "config"  # "config", or "agent:<agent_id>" for agent-registered workers
    vram_free_mb: float | None = None
    loaded_models: frozenset[str] = frozenset()
    last_seen: float | None = None  # last agent heartbeat (wall clock), agent workers only
    agent_stale: bool = False  # its agent missed heartbeats for longer than the TTL
    probe_ok_streak: int = 0
    probe_fail_streak: int = 0
    last_change: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def models(self) -> frozenset[str]:
        if self.spec.models:
            return frozenset(self.spec.models)
        return self.discovered_models

    @property
    def routable(self) -> bool:
        if not self.healthy or self.draining or self.agent_stale:
            return False
        cap = self.spec.max_concurrency
        return not (cap and self.in_flight + self.remote_in_flight >= cap)

    @contextmanager
    def in_flight_slot(self) -> Iterator[None]:
        """Count a request as load until its body stream ends, even on cancel."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def observe_ttfb(self, model: str, seconds: float) -> None:
        """One answered request's time to first byte, for ``model``."""
        self.latency_samples += 1
        prev = self.ewma_latency_s
        self.ewma_latency_s = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)
        per_model = self.ttfb_by_model.get(model)
        if per_model is None:
            per_model = self.ttfb_by_model[model] = Ewma()
        per_model.add(seconds)

    def ttfb(self, model: str) -> Ewma:
        """TTFB statistics for ``model`` on this worker (empty before its first answer)."""
        return self.ttfb_by_model.get(model) or Ewma()

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<Worker {self.name} {state} in_flight={self.in_flight} {self.url}>"


class Registry:
    def __init__(self, specs: Iterable[WorkerSpec] = (), *,
                 healthy_after: int = 1, unhealthy_after: int = 1,
                 on_change: Callable[[Worker], None] | None = None) -> None:
        self._workers: dict[str, Worker] = {}
        self.healthy_after = healthy_after
        self.unhealthy_after = unhealthy_after
        self._on_change = on_change
        self.on_remove: list[Callable[[str], None]] = []  # e.g. drop breaker state
        self.on_health: list[Callable[[Worker], None]] = []  # up or down, e.g. drop caches
        self.on_add: list[Callable[[Worker], None]] = []  # e.g. apply a shared drain flag
        self.on_drain: list[Callable[[Worker], None]] = []  # drained or back, e.g. share it
        for spec in specs:
            self.add(spec)

    # -- reads -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, name: str) -> Worker | None:
        return self._workers.get(name)

    def known_models(self) -> dict[str, list[Worker]]:
        """Every model any worker serves (healthy or not) -> the workers serving it."""
        out: dict[str, list[Worker]] = {}
        for w in self._workers.values():
            for m in w.models:
                out.setdefault(m, []).append(w)
        return out

    def serves(self, model: str, route: str | None = None) -> bool:
        """Some worker serves ``model`` (on ``route``, if given), healthy or not."""
        return any(model in w.models and (route is None or w.spec.serves_route(route))
                   for w in self._workers.values())

    def candidates(self, model: str, route: str | None = None) -> list[Worker]:
        """Routable local workers that serve ``model`` (on ``route``: a worker whose kind
        or ``routes:`` does not take the route is no candidate), in registry order.
        Fallback-tier workers are never candidates: only spill-over picks them."""
        if route is None:
            return [w for w in self._workers.values()
                    if w.routable and model in w.models and not w.spec.fallback]
        return [w for w in self._workers.values()
                if w.routable and model in w.models and w.spec.serves_route(route)
                and not w.spec.fallback]

    def fallbacks(self, model: str, route: str | None = None) -> list[Worker]:
        """Routable fallback-tier workers that take ``model`` on ``route``, in config
        order (the first is preferred)."""
        return [w for w in self._workers.values()
                if w.spec.fallback and w.routable and model in w.models
                and (route is None or w.spec.serves_route(route))]

    def saturated(self, model: str, route: str | None = None) -> bool:
        """Healthy local workers serve ``model`` (on ``route``) but every one is at its
        max_concurrency."""
        full = False
        for w in self._workers.values():
            if model not in w.models or not w.healthy or w.draining or w.agent_stale:
                continue
            if w.spec.fallback:  # not a local worker: its room is spill-over's business
                continue
            if route is not None and not w.spec.serves_route(route):
                continue
            if w.routable:
                return False
            full = True
        return full

    def any_healthy(self) -> bool:
        return any(w.healthy for w in self._workers.values())

    # -- writes ----------------------------------------------------------------
    def add(self, spec: WorkerSpec) -> Worker:
        if spec.name in self._workers:
            raise ValueError(f"worker {spec.name!r} already registered")
        worker = Worker(spec=spec)
        self._workers[spec.name] = worker
        for listener in self.on_add:
            listener(worker)
        return worker

    def set_draining(self, worker: Worker, draining: bool) -> None:
        """Drain (no new requests; in-flight ones finish) or put back in rotation."""
        if worker.draining == draining:
            return
        worker.draining = draining
        for listener in self.on_drain:
            listener(worker)

    def remove(self, name: str) -> Worker | None:
        """Forget a worker; requests already holding it finish normally."""
        worker = self._workers.pop(name, None)
        if worker is not None:
            for listener in self.on_remove:
                listener(name)
        return worker

    def replace_spec(self, worker: Worker, spec: WorkerSpec) -> None:
        """New settings for a known worker; a new address or kind must pass a probe again."""
        if (spec.url, spec.kind) != (worker.spec.url, worker.spec.kind):
            worker.discovered_models = frozenset()
            worker.probe_ok_streak = 0
            if worker.healthy:
                self._set_health(worker, False)
            worker.detail = "address changed; not probed yet"
        worker.spec = spec

    def apply_probe(self, worker: Worker, result: ProbeResult) -> None:
        if result.models is not None:
            worker.discovered_models = frozenset(result.models)
        if result.slots_total is not None:
            worker.slots_total = result.slots_total
            worker.slots_busy = result.slots_busy
        if result.loaded_models is not None:
            worker.loaded_models = frozenset(result.loaded_models)
        worker.detail = result.detail
        if result.healthy:
            worker.probe_ok_streak += 1
            worker.probe_fail_streak = 0
            if not worker.healthy and worker.probe_ok_streak >= self.healthy_after:
                self._set_health(worker, True)
        else:
            worker.probe_fail_streak += 1
            worker.probe_ok_streak = 0
            if worker.healthy and worker.probe_fail_streak >= self.unhealthy_after:
                self._set_health(worker, False)

    def mark_unreachable(self, worker: Worker, detail: str) -> None:
        """Passive signal: the proxy could not even connect. Out until a probe succeeds."""
        worker.detail = detail
        worker.probe_ok_streak = 0
        if worker.healthy:
            self._set_health(worker, False)

    def _set_health(self, worker: Worker, healthy: bool) -> None:
        worker.healthy = healthy
        worker.last_change = time.monotonic()
        if self._on_change is not None:
            self._on_change(worker)
        for listener in self.on_health:
            listener(worker)

    def __repr__(self) -> str:
        ws = list(self._workers.values())
        up = sum(w.healthy for w in ws)
        return (f"<Registry {up} up, {len(ws) - up} down, "
                f"in_flight={sum(w.in_flight for w in ws)}>")
