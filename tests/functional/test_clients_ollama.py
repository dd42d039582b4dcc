"""The official ``ollama`` Python client with ``host`` at the hub (JWT auth on, the token
in its ``headers``): llama.cpp workers through the translator, an Ollama worker (the
conformance fake) natively."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from tests.conftest import workers_config
from tests.support.clients import AuthHub
from tests.support.closing import closing
from tests.support.llama import LlamaWorker
from tests.support.ollama_proc import OllamaFake

NATIVE = "llama3.2:3b"  # served by the Ollama fake only
MESSAGES: list[Any] = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaFake]:
    fake = OllamaFake(tmp_path_factory.mktemp("ollama-fake"), models=[NATIVE],
                      loaded=[NATIVE], delay_s=0.001).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, llama_pair: tuple[LlamaWorker, LlamaWorker],
        fake: OllamaFake) -> Iterator[AuthHub]:
    config = workers_config(*llama_pair, aliases={"tiny-alias": "tiny"})
    config["workers"].append({"name": "ollama", "url": fake.url, "kind": "ollama"})
    hub = AuthHub(config, tmp_path_factory.mktemp("ollama-hub")).start()
    yield hub
    hub.stop()


def client(hub: AuthHub, token: str | None = None) -> ollama.Client:
    return closing(ollama.Client(host=hub.url, timeout=60, headers={
        "Authorization": f"Bearer {token or hub.token('infer')}"}))


def test_chat(hub: AuthHub) -> None:
    resp = client(hub).chat(model="tiny", messages=MESSAGES, options={"num_predict": 8})
    assert resp.done and resp.done_reason == "length" and resp.model == "tiny"
    assert resp.message.role == "assistant" and resp.message.content
    assert resp.eval_count == 8 and (resp.prompt_eval_count or 0) > 0


def test_chat_stream(hub: AuthHub) -> None:
    parts = list(client(hub).chat(model="tiny", messages=MESSAGES, stream=True,
                                  options={"num_predict": 8}))
    assert len(parts) >= 3
    assert not any(p.done for p in parts[:-1]) and parts[-1].done
    assert parts[-1].eval_count == 8
    assert "".join(p.message.content or "" for p in parts)


def test_generate(hub: AuthHub) -> None:
    resp = client(hub).generate(model="tiny", prompt="Once upon", options={"num_predict": 6})
    assert resp.done and resp.response and resp.eval_count == 6
    parts = list(client(hub).generate(model="tiny-alias", prompt="Once upon", stream=True,
                                      options={"num_predict": 6}))
    assert parts[-1].done and "".join(p.response or "" for p in parts)
    loaded = client(hub).generate(model="tiny")  # no prompt: load the model
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""


def test_embed(hub: AuthHub) -> None:
    resp = client(hub).embed(model="tiny", input=["first text", "second text"])
    assert len(resp.embeddings) == 2 and len(resp.embeddings[0]) == 64
    assert resp.embeddings[0] != resp.embeddings[1]
    legacy = client(hub).embeddings(model="tiny", prompt="first text")  # the older route
    assert len(legacy.embedding) == 64


def test_list_ps_show(hub: AuthHub) -> None:
    listed = client(hub).list()
    assert [m.model for m in listed.models] == [NATIVE, "tiny", "tiny-alias"]
    tags = httpx.get(f"{hub.url}/api/tags", timeout=30,
                     headers={"Authorization": f"Bearer {hub.token('infer')}"}).json()
    routes = {m["name"]: m["spokehub"]["routes"] for m in tags["models"]}
    assert "/v1/messages" in routes["tiny"] and "/v1/messages" not in routes[NATIVE]
    assert "/api/chat" in routes[NATIVE]
    running = {m.model for m in client(hub).ps().models}
    assert {NATIVE, "tiny"} <= running
    show = client(hub).show("tiny")
    assert show.capabilities == ["completion", "embedding"]
    limited = client(hub, hub.token("infer", models=["tiny"]))
    assert [m.model for m in limited.list().models] == ["tiny"]


def test_native_ollama_worker_gets_the_request_unchanged(hub: AuthHub, fake: OllamaFake) -> None:
    before = fake.stats()["routes"]
    resp = client(hub).chat(model=NATIVE, messages=MESSAGES, options={"num_predict": 4})
    assert resp.done and resp.eval_count == 4
    parts = list(client(hub).chat(model=NATIVE, messages=MESSAGES, stream=True,
                                  options={"num_predict": 4}))
    assert parts[-1].done and "".join(p.message.content or "" for p in parts)
    gen = client(hub).generate(model=NATIVE, prompt="why?", options={"num_predict": 3})
    assert gen.done and gen.eval_count == 3
    emb = client(hub).embed(model=NATIVE, input="hello")
    assert len(emb.embeddings) == 1
    after = fake.stats()["routes"]
    for route, n in (("/api/chat", 2), ("/api/generate", 1), ("/api/embed", 1)):
        assert after.get(route, 0) - before.get(route, 0) == n, (route, before, after)


def test_errors_are_ollama_shaped(hub: AuthHub) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client(hub).chat(model="nope", messages=MESSAGES)
    assert missing.value.status_code == 404 and "nope" in missing.value.error
    with pytest.raises(ollama.ResponseError) as unauth:
        client(hub, "not-a-token").list()
    assert unauth.value.status_code == 401 and unauth.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client(hub).show("nope")
    assert unknown.value.status_code == 404
