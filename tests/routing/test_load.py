from __future__ import annotations

import math

from hub.config.workers import WorkerSpec
from hub.fleet.registry import Worker
from hub.routing import load


def _w(name: str = "w", *, max_concurrency: int = 0, **fields: object) -> Worker:
    w = Worker(spec=WorkerSpec(name=name, url=f"http://{name}",
                               max_concurrency=max_concurrency), healthy=True)
    for key, value in fields.items():
        setattr(w, key, value)
    return w


def test_unknown_capacity() -> None:
    w = _w(in_flight=3)
    assert load.capacity(w) is None
    assert load.free_slots(w) is None
    assert load.utilisation(w) == 3.0
    assert not load.is_full(w)


def test_reported_slots_and_hub_count_combine_by_max() -> None:
    w = _w(slots_total=4, slots_busy=1, in_flight=2)
    assert load.busy(w) == 2
    assert load.free_slots(w) == 2
    assert load.utilisation(w) == 0.5
    w.slots_busy = 4  # other clients of the worker fill it up
    assert load.is_full(w)
    assert load.free_slots(w) == 0
    w.in_flight = 6  # queued at the worker
    assert load.utilisation(w) == 1.5
    assert load.free_slots(w) == 0


def test_configured_cap_stands_in_for_slots() -> None:
    w = _w(max_concurrency=2, in_flight=1)
    assert load.capacity(w) == 2
    assert load.utilisation(w) == 0.5
    w.slots_total = 8
    assert load.capacity(w) == 8


def test_vram_and_latency() -> None:
    assert load.vram_free_mb(_w()) is None
    assert load.vram_free_mb(_w(vram_free_mb=8192)) == 8192.0
    assert load.vram_free_mb(_w(vram_free_mb=-1.0)) is None
    assert load.vram_free_mb(_w(vram_free_mb=math.nan)) is None
    assert load.latency_s(_w()) is None
    assert load.latency_s(_w(ewma_latency_s=0.25)) == 0.25
