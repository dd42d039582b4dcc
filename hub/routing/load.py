"""The one load view routing policies read: small functions over ``Worker`` fields.

Two sources of "busy" exist: the hub's own ``in_flight`` count (live, but blind to other
clients of the worker) and the worker's reported ``slots_busy`` (complete, but as old as
the last probe or heartbeat). The worker's report already includes the hub's requests,
so the two are combined with ``max``, not added.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.fleet.registry import Worker


def capacity(w: Worker) -> int | None:
    """Concurrent requests the worker can run: reported slots, else the configured cap."""
    if w.slots_total is not None and w.slots_total > 0:
        return w.slots_total
    if w.spec.max_concurrency > 0:
        return w.spec.max_concurrency
    return None


def busy(w: Worker) -> int:
    """Requests running on the worker, by the fresher of the hubs' and the worker's count
    (other hubs' requests are known for workers with ``max_concurrency`` only)."""
    return max(w.in_flight + w.remote_in_flight, w.slots_busy or 0)


def free_slots(w: Worker) -> int | None:
    """Slot headroom, or None when the worker's capacity is unknown."""
    cap = capacity(w)
    return None if cap is None else max(cap - busy(w), 0)


def utilisation(w: Worker) -> float:
    """Busy over capacity (1.0 = every slot taken); plain busy count if capacity unknown."""
    return busy(w) / max(capacity(w) or 1, 1)


def is_full(w: Worker) -> bool:
    """Known capacity and every slot taken: a new request would queue on the worker."""
    cap = capacity(w)
    return cap is not None and busy(w) >= cap


def vram_free_mb(w: Worker) -> float | None:
    """Free VRAM reported by the worker's agent, or None when it reports none."""
    value = w.vram_free_mb
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def latency_s(w: Worker, model: str | None = None) -> float | None:
    """EWMA time to first byte for ``model`` (over all models without one), or None before
    the worker's first answer for it: models on one worker are not comparable."""
    if model is None:
        return w.ewma_latency_s
    return w.ttfb(model).value
