"""Candidates by route: a worker that does not take a route is never picked for it."""

from __future__ import annotations

from hub.config.workers import WorkerSpec
from hub.fleet.registry import Registry


def _registry() -> Registry:
    reg = Registry([
        WorkerSpec("llama", "http://a", models=("m",)),
        WorkerSpec("ollama", "http://b", kind="ollama", models=("m",)),
        WorkerSpec("rerank", "http://c", models=("m",), routes=frozenset({"/rerank"}),
                   max_concurrency=1),
    ])
    for w in reg:
        w.healthy = True
    return reg


def _names(reg: Registry, route: str | None) -> list[str]:
    return [w.name for w in reg.candidates("m", route)]


def test_candidates_filter_by_route() -> None:
    reg = _registry()
    assert _names(reg, None) == ["llama", "ollama", "rerank"]
    assert _names(reg, "/chat/completions") == ["llama", "ollama"]
    assert _names(reg, "/messages") == ["llama"]
    assert _names(reg, "/rerank") == ["llama", "rerank"]
    assert _names(reg, "/api/chat") == ["llama", "ollama"]


def test_serves_and_saturated_by_route() -> None:
    reg = _registry()
    assert reg.serves("m", "/messages") and not reg.serves("m2", "/messages")
    reg.get("llama").draining = True  # type: ignore[union-attr]
    assert reg.serves("m", "/audio/transcriptions")  # a draining worker still serves it
    rerank = reg.get("rerank")
    assert rerank is not None
    rerank.in_flight = 1  # at its max_concurrency
    assert reg.saturated("m", "/rerank")  # only the full worker takes it: wait for it
    assert not reg.saturated("m", "/chat/completions")  # ollama has room
