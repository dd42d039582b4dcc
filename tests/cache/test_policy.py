"""Which requests are deterministic, and what Cache-Control does."""

from __future__ import annotations

from typing import Any

import pytest

from hub.cache.config import ResponseCacheConfig
from hub.cache.policy import (
    NO_CACHE,
    NO_STORE,
    NONDETERMINISTIC,
    Decision,
    cache_control,
    decide,
    deterministic,
)

CHAT = "/chat/completions"
BASE: dict[str, Any] = {"model": "m", "messages": [], "temperature": 0}


@pytest.mark.parametrize("extra", [{}, {"temperature": 0.0}, {"n": 1}, {"seed": 7},
                                   {"top_p": 0.1}, {"logprobs": True}, {"tools": None},
                                   {"stream": True}, {"max_tokens": 4}])
def test_deterministic(extra: dict[str, Any]) -> None:
    assert deterministic(CHAT, {**BASE, **extra}, None)


@pytest.mark.parametrize("extra", [{"temperature": 0.7}, {"temperature": "0"},
                                   {"temperature": False}, {"n": 2}, {"n": 1.0},
                                   {"tools": []}, {"tools": [{"type": "function"}]},
                                   {"functions": []}, {"tool_choice": "auto"},
                                   {"function_call": "auto"}])
def test_not_deterministic(extra: dict[str, Any]) -> None:
    assert not deterministic(CHAT, {**BASE, **extra}, None)


def test_absent_temperature_needs_a_configured_zero_default() -> None:
    body = {"model": "m", "messages": []}
    assert not deterministic(CHAT, body, None)
    assert not deterministic(CHAT, body, 0.8)
    assert deterministic(CHAT, body, 0.0)
    assert not deterministic(CHAT, {**body, "temperature": 1}, 0.0)


def test_best_of_on_completions_and_embeddings_always() -> None:
    assert not deterministic("/completions", {**BASE, "best_of": 3}, None)
    assert deterministic("/completions", {**BASE, "best_of": 1}, None)
    assert deterministic("/embeddings", {"model": "m", "input": "x", "temperature": 2}, None)


def test_cache_control_directives() -> None:
    assert cache_control({}) == frozenset()
    assert cache_control({"Cache-Control": "No-Cache, max-age=0"}) == {"no-cache", "max-age"}


def test_decide() -> None:
    cfg = ResponseCacheConfig(enabled=True, routes=(CHAT,))
    assert decide(cfg, "/completions", BASE, {}) is None  # not a cached route
    assert decide(cfg, "/messages", BASE, {}) is None
    assert decide(cfg, CHAT, BASE, {}) == Decision(read=True, write=True)
    assert decide(cfg, CHAT, {**BASE, "n": 2}, {}) == Decision(False, False, NONDETERMINISTIC)
    assert decide(cfg, CHAT, BASE, {"Cache-Control": "no-cache"}) == \
        Decision(read=False, write=True, reason=NO_CACHE)
    assert decide(cfg, CHAT, BASE, {"Cache-Control": "no-cache, no-store"}) == \
        Decision(read=False, write=False, reason=NO_STORE)
