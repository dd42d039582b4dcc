from __future__ import annotations

from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult, Registry, Worker
from hub.routing import RoundRobin


def _w(name: str) -> Worker:
    return Worker(spec=WorkerSpec(name=name, url=f"http://{name}"), healthy=True)


def test_cycles_evenly() -> None:
    rr = RoundRobin()
    ws = [_w("a"), _w("b"), _w("c")]
    picks = [rr.pick(ws) for _ in range(9)]
    assert [p.name for p in picks if p] == ["a", "b", "c"] * 3


def test_empty_and_shrinking_candidates() -> None:
    rr = RoundRobin()
    assert rr.pick([]) is None
    ws = [_w("a"), _w("b"), _w("c")]
    rr.pick(ws)
    rr.pick(ws)
    assert rr.pick(ws[:1]) is ws[0]


def test_registry_candidates_filter_health_model_and_drain() -> None:
    reg = Registry([WorkerSpec("a", "http://a", models=("m",)),
                    WorkerSpec("b", "http://b", models=("m",)),
                    WorkerSpec("c", "http://c")])
    for w in reg:
        reg.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"x"})))
    assert [w.name for w in reg.candidates("m")] == ["a", "b"]
    assert [w.name for w in reg.candidates("x")] == ["c"]
    b = reg.get("b")
    assert b is not None
    reg.apply_probe(b, ProbeResult(healthy=False))
    assert [w.name for w in reg.candidates("m")] == ["a"]
    a = reg.get("a")
    assert a is not None
    a.draining = True
    assert reg.candidates("m") == []
    assert reg.serves("m") and not reg.serves("zzz")
    assert "1 down" in repr(reg)
