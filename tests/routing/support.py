"""Workers and pick sequences for routing-policy tests."""

from __future__ import annotations

from collections.abc import Sequence

from hub.config.workers import WorkerSpec
from hub.fleet.registry import Worker
from hub.routing import Policy


def worker(name: str, **fields: object) -> Worker:
    """A healthy worker with the given state fields set (in_flight, slots_total, ...)."""
    w = Worker(spec=WorkerSpec(name=name, url=f"http://{name}"), healthy=True)
    for key, value in fields.items():
        setattr(w, key, value)
    return w


def pick_names(policy: Policy, candidates: Sequence[Worker], n: int) -> list[str]:
    out = []
    for _ in range(n):
        w = policy.pick(candidates)
        assert w is not None
        out.append(w.name)
    return out
