"""Least loaded by power of two choices.

Sample two candidates at random and send to the less loaded one (load = busy slots over
capacity, see ``hub.routing.load``); on equal load, the lower EWMA time to first byte
for the requested model wins (a worker with no latency data for it yet counts as
fastest, so new workers get tried).
Two random choices avoid the herd that "always the global minimum" causes when load data
is stale, while still steering clearly away from busy workers.

Workers whose slots are all taken are left out while any candidate has room; when all are
full, the same two-choice pick runs over all of them (the request queues there).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hub.routing import load

if TYPE_CHECKING:
    from hub.fleet.registry import Worker


def _key(w: Worker, model: str | None) -> tuple[float, float]:
    return load.utilisation(w), load.latency_s(w, model) or 0.0


class LeastLoaded:
    name = "least_loaded"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Worker], *,
             model: str | None = None) -> Worker | None:
        if not candidates:
            return None
        pool = [w for w in candidates if not load.is_full(w)] or list(candidates)
        if len(pool) == 1:
            return pool[0]
        a, b = self._rng.sample(pool, 2)
        return b if _key(b, model) < _key(a, model) else a

    def __repr__(self) -> str:
        return "<LeastLoaded choices=2>"
