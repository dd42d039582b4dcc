"""Slow-worker ejection (outlier detection), separate from the circuit breaker.

The breaker reacts to errors; this reacts to a worker that answers, but far slower than
its peers. A worker is an outlier when its EWMA time to first byte is above ``factor``
times the median of its peers' (healthy, not ejected, with enough samples) and above an
absolute floor ``min_latency_s``. Outliers are ejected for ``eject_s`` times the number
of times they have been ejected (capped at ``max_eject_s``); the multiplier decays by one
each time fresh samples show the worker is no longer an outlier.

Guards: at most ``max_ejected_fraction`` of the pool is ejected at once (rounded down,
so 0 disables ejection), and at least one healthy worker always stays in.

Compare like with like: latencies of workers serving different models (or hardware
classes) are not comparable, so run one pool per model group. ``find_outliers`` is the
pure decision; ``OutlierDetector`` adds the clock and per-worker ejection history and is
meant to be updated on a fixed interval (the prober's tick).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from hub.config.kit import ConfigError, Section

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    factor: float = 3.0
    min_samples: int = 10
    min_latency_s: float = 0.5
    eject_s: float = 30.0
    max_eject_s: float = 300.0
    max_ejected_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class LatencyStat:
    """One worker's latency evidence: EWMA time to first byte over ``samples`` requests."""

    name: str
    ewma_s: float | None
    samples: int
    healthy: bool = True


def ejection_cap(pool_size: int, cfg: OutlierConfig) -> int:
    """How many workers of a pool may be ejected at once (never all of them)."""
    if pool_size <= 1:
        return 0
    return min(math.floor(pool_size * cfg.max_ejected_fraction + 1e-9), pool_size - 1)


def outlier_scores(stats: Sequence[LatencyStat], ejected: Set[str],
                   cfg: OutlierConfig) -> list[tuple[float, str]]:
    """Every outlier among the active workers as (EWMA / peer median, name), worst first."""
    judged = [(s.name, s.ewma_s) for s in stats
              if s.healthy and s.name not in ejected and s.ewma_s is not None
              and s.samples >= cfg.min_samples]
    scored: list[tuple[float, str]] = []
    for name, ewma in judged:
        peers = [other for n, other in judged if n != name]
        if not peers or ewma < cfg.min_latency_s:
            continue
        median = statistics.median(peers)
        if ewma > cfg.factor * median:
            scored.append((ewma / median if median > 0 else math.inf, name))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return scored


def find_outliers(stats: Sequence[LatencyStat], ejected: Set[str],
                  cfg: OutlierConfig) -> list[str]:
    """Names to eject now, worst first, within the caps. Pure: no clock, no state."""
    active = sum(s.healthy and s.name not in ejected for s in stats)
    already = sum(s.name in ejected for s in stats)
    room = min(ejection_cap(len(stats), cfg) - already, active - 1)
    if room <= 0:
        return []
    return [name for _, name in outlier_scores(stats, ejected, cfg)[:room]]


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


@dataclass(slots=True)
class _History:
    ejections: int = 0  # multiplier for the next ejection's length
    until: float | None = None  # ejected until this clock time
    baseline: int = 0  # samples seen when last ejected: only newer ones count


class OutlierDetector:
    def __init__(self, cfg: OutlierConfig, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._history: dict[str, _History] = {}

    def update(self, stats: Sequence[LatencyStat]) -> list[str]:
        """Expire finished ejections, eject new outliers; returns the newly ejected names."""
        now = self._clock()
        for h in self._history.values():
            if h.until is not None and h.until <= now:
                h.until = None
        ejected = self.ejected()
        fresh = [self._fresh(s) for s in stats]
        new = find_outliers(fresh, ejected, self.cfg)
        slow = {name for _, name in outlier_scores(fresh, ejected, self.cfg)}
        for s, f in zip(stats, fresh, strict=True):
            h = self._history.setdefault(s.name, _History())
            if s.name in new:
                h.ejections += 1
                h.until = now + min(self.cfg.eject_s * h.ejections, self.cfg.max_eject_s)
                h.baseline = s.samples
            elif (h.ejections and h.until is None and f.healthy and s.name not in slow
                  and f.samples >= self.cfg.min_samples):
                h.ejections -= 1  # fresh evidence that it keeps up again
        return new

    def _fresh(self, s: LatencyStat) -> LatencyStat:
        """Count only samples taken since the worker's last ejection."""
        h = self._history.get(s.name)
        if h is None or not h.baseline:
            return s
        if s.samples < h.baseline:  # the worker's counter restarted
            h.baseline = 0
            return s
        return replace(s, samples=s.samples - h.baseline)

    def is_ejected(self, name: str) -> bool:
        h = self._history.get(name)
        return h is not None and h.until is not None and self._clock() < h.until

    def ejected(self) -> frozenset[str]:
        now = self._clock()
        return frozenset(name for name, h in self._history.items()
                         if h.until is not None and now < h.until)

    def admit(self, candidates: Sequence[N]) -> list[N]:
        """Candidates minus ejected workers; all of them if that would leave none."""
        kept = [c for c in candidates if not self.is_ejected(c.name)]
        return kept or list(candidates)

    def forget(self, name: str) -> None:
        self._history.pop(name, None)

    def snapshot(self) -> dict[str, dict[str, object]]:
        now = self._clock()
        return {name: {"ejected": h.until is not None and now < h.until,
                       "ejected_for_s": None if h.until is None else max(0.0, h.until - now),
                       "ejections": h.ejections}
                for name, h in self._history.items()}

    def __repr__(self) -> str:
        out = sorted(self.ejected())
        return (f"<OutlierDetector factor={self.cfg.factor:g} "
                f"ejected={','.join(out) if out else '-'}>")


def parse_outlier(raw: object, path: str) -> OutlierConfig:
    """Parse the ``outlier`` mapping (None means all defaults); errors name the key."""

    s = Section(raw, path)
    d = OutlierConfig()
    cfg = OutlierConfig(
        factor=s.number("factor", d.factor, lo=1.0),
        min_samples=s.integer("min_samples", d.min_samples, lo=1),
        min_latency_s=s.number("min_latency_s", d.min_latency_s, exclusive_lo=False),
        eject_s=s.number("eject_s", d.eject_s),
        max_eject_s=s.number("max_eject_s", d.max_eject_s),
        max_ejected_fraction=s.number("max_ejected_fraction", d.max_ejected_fraction,
                                      exclusive_lo=False),
    )
    s.done()
    prefix = f"{path}." if path else ""
    if cfg.max_ejected_fraction > 1.0:
        raise ConfigError(f"{prefix}max_ejected_fraction: must be <= 1, "
                          f"got {cfg.max_ejected_fraction}")
    if cfg.max_eject_s < cfg.eject_s:
        raise ConfigError(f"{prefix}max_eject_s: must be >= eject_s ({cfg.eject_s}), "
                          f"got {cfg.max_eject_s}")
    return cfg
