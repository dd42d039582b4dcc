"""Model-aware routing over real llama.cpp workers with different models and an Ollama worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.ollama_proc import OllamaFake

MSG: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[tuple[HubProcess, OllamaFake, OllamaFake]]:
    tmp = tmp_path_factory.mktemp("models")
    a = LlamaWorker("tiny-a", tmp, seed=0).start(wait=False)
    b = LlamaWorker("tiny-b", tmp, seed=1).start(wait=False)
    olla = OllamaFake(tmp, models=("tiny-a", "llama3.2:3b"), loaded=("tiny-a",)).start()
    old = OllamaFake(tmp, models=("llama3.2:1b",)).start()
    hub = None
    try:
        a.start_wait()
        b.start_wait()
        hub = HubProcess({
            "health": {"interval_s": 0.5, "timeout_s": 1},
            "aliases": {"gpt-4o-mini": "tiny-b", "llama3": "llama3.2:3b"},
            "workers": [{"name": "llama-a", "url": a.url},
                        {"name": "llama-b", "url": b.url},
                        {"name": "ollama", "url": olla.url, "kind": "ollama"},
                        {"name": "ollama-old", "url": old.url, "kind": "ollama",
                         "api": "native"}],
        }, tmp).start()
        yield hub, olla, old
    finally:
        if hub is not None:
            hub.stop()
        for p in (olla, old):
            p.stop()
        a.stop()
        b.stop()


def _client(hub: HubProcess) -> openai.OpenAI:
    return closing(openai.OpenAI(base_url=hub.base_url, api_key="x", max_retries=0, timeout=30))


def _served_by(hub: HubProcess, model: str, n: int) -> list[str]:
    c = _client(hub)
    return [c.chat.completions.with_raw_response.create(
        model=model, messages=MSG, max_tokens=1).headers["x-spokehub-worker"] for _ in range(n)]


def test_models_list_is_the_union_with_aliases(fleet: tuple[HubProcess, Any, Any]) -> None:
    hub = fleet[0]
    models = {m.id: m for m in _client(hub).models.list().data}
    assert set(models) == {"tiny-a", "tiny-b", "llama3.2:3b", "llama3.2:1b",
                           "gpt-4o-mini", "llama3"}
    assert all(m.owned_by == "spokehub" for m in models.values())
    extra = models["tiny-a"].model_extra or {}
    assert sorted(extra["spokehub"]["workers"]) == ["llama-a", "ollama"]


def test_model_only_reaches_workers_that_serve_it(fleet: tuple[HubProcess, Any, Any]) -> None:
    hub, olla, _ = fleet
    before = olla.stats()["requests"].get("tiny-b", 0)
    assert set(_served_by(hub, "tiny-b", 8)) == {"llama-b"}
    assert olla.stats()["requests"].get("tiny-b", 0) == before
    assert set(_served_by(hub, "llama3.2:3b", 4)) == {"ollama"}


def test_llamacpp_and_ollama_serve_the_same_model_side_by_side(
        fleet: tuple[HubProcess, Any, Any]) -> None:
    assert set(_served_by(fleet[0], "tiny-a", 6)) == {"llama-a", "ollama"}


def test_aliases_resolve(fleet: tuple[HubProcess, Any, Any]) -> None:
    resp = _client(fleet[0]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, max_tokens=1)
    assert resp.headers["x-spokehub-worker"] == "llama-b"
    assert set(_served_by(fleet[0], "llama3", 2)) == {"ollama"}


def test_newly_pulled_model_becomes_routable(fleet: tuple[HubProcess, OllamaFake, Any]) -> None:
    hub, olla, _ = fleet
    c = _client(hub)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="qwen2:0.5b", messages=MSG)
    olla.control(pull="qwen2:0.5b")
    pulled = time.monotonic()
    while True:
        try:
            resp = c.chat.completions.with_raw_response.create(model="qwen2:0.5b",
                                                               messages=MSG, max_tokens=1)
            break
        except openai.NotFoundError:
            assert time.monotonic() - pulled < 2 * 0.5 + 1, "not routable within a probe"
            time.sleep(0.05)
    assert resp.headers["x-spokehub-worker"] == "ollama"


def test_ollama_native_api_through_the_sdk(fleet: tuple[HubProcess, Any, OllamaFake]) -> None:
    hub, _, old = fleet
    c = _client(hub)
    old_before = old.stats()["routes"].get("/api/chat", 0)
    resp = c.chat.completions.create(model="llama3.2:1b", messages=MSG, max_tokens=3)
    assert resp.object == "chat.completion" and resp.choices[0].message.content
    chunks = list(c.chat.completions.create(model="llama3.2:1b", messages=MSG,
                                            max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert old.stats()["routes"].get("/api/chat", 0) == old_before + 2


def test_unknown_model_lists_nothing_secret(fleet: tuple[HubProcess, Any, Any]) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        _client(fleet[0]).chat.completions.create(model="secret-model", messages=MSG)
    assert "127.0.0.1" not in str(err.value) and "llama-a" not in str(err.value)


