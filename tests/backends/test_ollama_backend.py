"""OllamaBackend: where requests go, and native chat against the Ollama fake (a real
process). Its probes are tested in tests/probing/test_ollama.py."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from openai.types.chat import ChatCompletionChunk

from hub.backends import backend_for
from hub.backends.ollama import OllamaBackend
from hub.backends.ollama_native import NativeChat, NdjsonToSse, chat_request
from hub.config.workers import WORKER_KINDS, WorkerSpec, parse_worker
from tests.support.ollama_proc import OllamaFake


@pytest.fixture
def ollama(tmp_path: Path) -> Iterator[OllamaFake]:
    fake = OllamaFake(tmp_path, models=["llama3.2:3b"]).start()
    yield fake
    fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def test_registered_as_a_worker_kind() -> None:
    assert "ollama" in WORKER_KINDS
    assert isinstance(backend_for("ollama"), OllamaBackend)
    spec = parse_worker({"name": "o", "url": "http://gpu1:11434/", "kind": "ollama"}, "w")
    assert spec.kind == "ollama"
    assert OllamaBackend().request_url(spec, "/chat/completions") == \
        "http://gpu1:11434/v1/chat/completions"


def test_native_api_translates_chat_only_and_sends_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KEY", "k1")
    spec = WorkerSpec(name="o", url="http://gpu1:11434", kind="ollama", api="native",
                      api_key_env="OLLAMA_KEY")
    backend = OllamaBackend()
    assert isinstance(backend.translator(spec, "/chat/completions"), NativeChat)
    assert backend.translator(spec, "/embeddings") is None
    assert backend.request_headers(spec) == {"Authorization": "Bearer k1"}


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
