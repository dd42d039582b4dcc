"""A worker's ``routes:``: which of the hub's routes it takes, by kind and by config."""

from __future__ import annotations

from typing import Any

import pytest

from hub.config.schema import ConfigError, parse_worker
from hub.config.workers import ROUTES, WorkerSpec


def _spec(**raw: Any) -> WorkerSpec:
    return parse_worker({"name": "w", "url": "http://127.0.0.1:1", **raw}, "workers[0]")


def test_llamacpp_takes_every_route_by_default() -> None:
    spec = _spec()
    assert all(spec.serves_route(route) for route in ROUTES.values())
    assert spec.serves_route("/api/chat") and spec.serves_route("/api/embed")


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_other_kinds_take_openai_routes_by_default(kind: str) -> None:
    spec = _spec(kind=kind)
    assert spec.serves_route("/chat/completions") and spec.serves_route("/embeddings")
    for route in ("/responses", "/messages", "/messages/count_tokens", "/rerank",
                  "/tokenize", "/audio/transcriptions"):
        assert not spec.serves_route(route), route
    # Ollama's own API: natively on Ollama, translated to the OpenAI routes on the rest
    assert spec.serves_route("/api/chat") and spec.serves_route("/api/generate")
    assert spec.serves_route("/api/embed")


def test_configured_routes_replace_the_default() -> None:
    spec = _spec(kind="ollama", routes=["/v1/chat/completions", "/v1/messages"])
    assert spec.routes == frozenset({"/chat/completions", "/messages"})
    assert spec.serves_route("/messages")
    assert not spec.serves_route("/embeddings")
    assert spec.serves_route("/api/embed")  # Ollama's native API is always there
    openai = _spec(kind="openai", url="http://127.0.0.1:1/v1", routes=["/v1/embeddings"])
    assert not openai.serves_route("/api/chat")  # translated to chat, which it does not take
    assert openai.serves_route("/api/embed")
    llama = _spec(routes=["/v1/rerank"])
    assert llama.serves_route("/rerank") and not llama.serves_route("/chat/completions")


@pytest.mark.parametrize("routes, message", [
    (["/v1/chat"], "workers[0].routes[0]: '/v1/chat' is not a hub route"),
    (["/api/chat"], "workers[0].routes[0]: '/api/chat' is not a hub route"),
    ([{"path": "/v1/messages"}], "workers[0].routes[0]"),
    ("/v1/messages", "workers[0].routes: must be a list"),
])
def test_bad_routes_name_the_key(routes: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _spec(routes=routes)
