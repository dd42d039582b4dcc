"""OllamaBackend against the Ollama fake, a real process, over a real aiohttp session."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai.types.chat import ChatCompletionChunk

from hub.backends import backend_for
from hub.backends.ollama import OllamaBackend
from hub.backends.ollama_native import NdjsonToSse, chat_request
from hub.config.workers import WORKER_KINDS, WorkerSpec, parse_worker
from tests.support.ollama_proc import OllamaFake

TIMEOUT = aiohttp.ClientTimeout(total=2)
MODELS = ["llama3.2:3b", "qwen2:0.5b"]


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaFake]:
    fake = OllamaFake(tmp_path_factory.mktemp("ollama"), models=MODELS,
                      loaded=["llama3.2:3b"]).start()
    yield fake
    fake.stop()


@pytest.fixture
def own_ollama(tmp_path: Path) -> Iterator[OllamaFake]:
    """A fake this test may change or stop."""
    fake = OllamaFake(tmp_path, models=["llama3.2:3b"]).start()
    yield fake
    fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _spec(fake: OllamaFake) -> WorkerSpec:
    return WorkerSpec(name="ollama-1", url=fake.url, kind="ollama")


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json()


def test_registered_as_a_worker_kind() -> None:
    assert "ollama" in WORKER_KINDS
    assert isinstance(backend_for("ollama"), OllamaBackend)
    spec = parse_worker({"name": "o", "url": "http://gpu1:11434/", "kind": "ollama"}, "w")
    assert spec.kind == "ollama"
    assert OllamaBackend().request_url(spec, "/chat/completions") == \
        "http://gpu1:11434/v1/chat/completions"


async def test_probe_healthy_with_installed_models(ollama: OllamaFake,
                                                   session: aiohttp.ClientSession) -> None:
    result = await OllamaBackend().probe(session, _spec(ollama), TIMEOUT)
    assert result.healthy
    assert "ollama 0.5.7" in result.detail
    assert result.models == frozenset(MODELS)


async def test_probe_reports_loaded_models_and_vram(ollama: OllamaFake,
                                                    session: aiohttp.ClientSession) -> None:
    ps = await _get(session, f"{ollama.url}/api/ps")
    result = await OllamaBackend().probe(session, _spec(ollama), TIMEOUT)
    assert result.loaded_models == frozenset({"llama3.2:3b"})
    assert result.vram_used_bytes == sum(m["size_vram"] for m in ps["models"]) > 0


async def test_pulled_model_appears_on_next_probe(own_ollama: OllamaFake,
                                                  session: aiohttp.ClientSession) -> None:
    backend, spec = OllamaBackend(), _spec(own_ollama)
    before = await backend.probe(session, spec, TIMEOUT)
    assert before.models == frozenset({"llama3.2:3b"})
    assert before.loaded_models == frozenset() and before.vram_used_bytes == 0
    own_ollama.control(pull="mistral:7b", load="mistral:7b")
    after = await backend.probe(session, spec, TIMEOUT)
    assert after.models == frozenset({"llama3.2:3b", "mistral:7b"})
    assert after.loaded_models == frozenset({"mistral:7b"})
    assert after.vram_used_bytes and after.vram_used_bytes > 0


async def test_unhealthy_when_the_server_answers_503(own_ollama: OllamaFake,
                                                     session: aiohttp.ClientSession) -> None:
    own_ollama.control(healthy=False)
    result = await OllamaBackend().probe(session, _spec(own_ollama), TIMEOUT)
    assert not result.healthy
    assert result.detail == "version: HTTP 503"
    assert result.models is None  # unknown this round: the registry keeps what it had


async def test_unhealthy_when_the_process_is_gone(own_ollama: OllamaFake,
                                                  session: aiohttp.ClientSession) -> None:
    spec = _spec(own_ollama)
    assert (await OllamaBackend().probe(session, spec, TIMEOUT)).healthy
    own_ollama.stop()
    result = await OllamaBackend().probe(session, spec, TIMEOUT)
    assert not result.healthy
    assert result.detail.startswith("version: Client")  # e.g. ClientConnectorError


async def test_native_chat_stream_through_the_translator(ollama: OllamaFake,
                                                         session: aiohttp.ClientSession) -> None:
    """Ollama's real NDJSON, split at random points, becomes a valid OpenAI chunk stream."""
    body = chat_request({"model": "llama3.2:3b", "stream": True, "max_tokens": 6,
                         "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
    async with session.post(f"{ollama.url}/api/chat", json=body) as resp:
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        raw = await resp.read()
    rng = random.Random(7)
    conv, out, i = NdjsonToSse(), b"", 0
    while i < len(raw):
        step = rng.randint(1, 9)
        out += conv.feed(raw[i:i + step])
        i += step
    out += conv.close()
    events = out[:-2].split(b"\n\n")
    assert events[-1] == b"data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e[len(b"data: "):]))
              for e in events[:-1]]
    assert chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    expected = "".join(json.loads(line)["message"]["content"] for line in raw.splitlines())
    assert text == expected and len(chunks) == 7
