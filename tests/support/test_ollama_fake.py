"""The Ollama fake speaks the documented wire format (ollama/ollama docs/api.md, openai.md)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.ollama_proc import OllamaFake

MODELS = ["llama3.2:3b", "qwen2:0.5b"]
CHAT = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "why is the sky blue?"}]}
FINAL_FIELDS = {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration"}
DETAILS = {"parent_model", "format", "family", "families", "parameter_size",
           "quantization_level"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaFake]:
    fake = OllamaFake(tmp_path_factory.mktemp("ollama"), models=MODELS,
                      loaded=["llama3.2:3b"], delay_s=0.001).start()
    yield fake
    fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _client(fake: OllamaFake) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="ollama", max_retries=0)


async def _post(http: aiohttp.ClientSession, url: str,
                body: dict[str, Any]) -> tuple[int, str, bytes]:
    async with http.post(url, json=body) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.read()


def _ndjson(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]  # each line is one JSON object


# -- native API ----------------------------------------------------------------------

async def test_version(ollama: OllamaFake, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{ollama.url}/api/version") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert set(await resp.json()) == {"version"}


async def test_tags_and_ps_shapes(ollama: OllamaFake, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{ollama.url}/api/tags") as resp:
        tags = (await resp.json())["models"]
    assert [m["name"] for m in tags] == MODELS  # most recently modified first
    for m in tags:
        assert set(m) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert m["model"] == m["name"] and isinstance(m["size"], int)
        assert re.fullmatch(r"[0-9a-f]{64}", m["digest"]) and TIME_RE.match(m["modified_at"])
        assert set(m["details"]) == DETAILS
    async with http.get(f"{ollama.url}/api/ps") as resp:
        ps = {m["name"]: m for m in (await resp.json())["models"]}
    loaded = ps["llama3.2:3b"]  # loaded at start
    assert loaded["model"] == "llama3.2:3b"
    assert {"size", "size_vram", "digest", "details", "expires_at"} <= set(loaded)
    assert 0 < loaded["size_vram"] <= loaded["size"] and TIME_RE.match(loaded["expires_at"])


async def test_chat_streams_ndjson_by_default(ollama: OllamaFake,
                                              http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await _post(http, f"{ollama.url}/api/chat", CHAT)
    assert (status, ctype) == (200, "application/x-ndjson")
    lines = _ndjson(raw)
    *parts, final = lines
    assert parts and all(p["done"] is False and p["message"]["role"] == "assistant"
                         for p in parts)
    assert final["done"] is True and final["done_reason"] == "stop"
    assert set(final) >= FINAL_FIELDS and final["eval_count"] == len(parts)
    assert all(TIME_RE.match(line["created_at"]) and line["model"] == "llama3.2:3b"
               for line in lines)


async def test_chat_num_predict_means_length(ollama: OllamaFake,
                                             http: aiohttp.ClientSession) -> None:
    _, _, raw = await _post(http, f"{ollama.url}/api/chat", {**CHAT, "options": {"num_predict": 3}})
    *parts, final = _ndjson(raw)
    assert len(parts) == 3 and final["done_reason"] == "length" and final["eval_count"] == 3


async def test_chat_without_streaming(ollama: OllamaFake, http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await _post(http, f"{ollama.url}/api/chat", {**CHAT, "stream": False})
    assert (status, ctype) == (200, "application/json; charset=utf-8")
    doc = json.loads(raw)
    assert doc["done"] is True and set(doc) >= FINAL_FIELDS
    assert doc["message"]["role"] == "assistant" and doc["message"]["content"]


async def test_chat_with_tools_calls_one(ollama: OllamaFake, http: aiohttp.ClientSession) -> None:
    tools = [{"type": "function", "function": {"name": "get_current_weather",
                                               "parameters": {"type": "object"}}}]
    _, _, raw = await _post(http, f"{ollama.url}/api/chat",
                            {**CHAT, "stream": False, "tools": tools})
    (call,) = json.loads(raw)["message"]["tool_calls"]
    assert call["function"]["name"] == "get_current_weather"
    assert call["function"]["arguments"] == {}


async def test_chat_empty_messages_loads_the_model(ollama: OllamaFake,
                                                   http: aiohttp.ClientSession) -> None:
    _, ctype, raw = await _post(http, f"{ollama.url}/api/chat",
                                {"model": "qwen2:0.5b", "messages": []})
    assert ctype.startswith("application/json")
    assert json.loads(raw)["done_reason"] == "load"
    assert "qwen2:0.5b" in ollama.stats()["loaded"]
    _, _, raw = await _post(http, f"{ollama.url}/api/chat",
                            {"model": "qwen2:0.5b", "messages": [], "keep_alive": 0})
    assert json.loads(raw)["done_reason"] == "unload"
    assert "qwen2:0.5b" not in ollama.stats()["loaded"]


async def test_generate_stream_and_single(ollama: OllamaFake,
                                          http: aiohttp.ClientSession) -> None:
    body = {"model": "llama3.2:3b", "prompt": "Why is the sky blue?"}
    status, ctype, raw = await _post(http, f"{ollama.url}/api/generate", body)
    assert (status, ctype) == (200, "application/x-ndjson")
    *parts, final = _ndjson(raw)
    assert all(isinstance(p["response"], str) and p["done"] is False for p in parts)
    assert final["done"] is True and final["response"] == "" and "context" in final
    _, _, raw = await _post(http, f"{ollama.url}/api/generate", {**body, "stream": False})
    doc = json.loads(raw)
    assert doc["response"] == "".join(p["response"] for p in parts) and doc["done"] is True


async def test_embed(ollama: OllamaFake, http: aiohttp.ClientSession) -> None:
    _, _, raw = await _post(http, f"{ollama.url}/api/embed",
                            {"model": "llama3.2:3b", "input": ["a", "b"]})
    doc = json.loads(raw)
    assert doc["model"] == "llama3.2:3b" and len(doc["embeddings"]) == 2
    assert all(isinstance(v, float) for v in doc["embeddings"][0])


async def test_unknown_model_is_404_like_ollama(ollama: OllamaFake,
                                                http: aiohttp.ClientSession) -> None:
    for route in ("/api/chat", "/api/generate", "/api/embed"):
        status, _, raw = await _post(http, f"{ollama.url}{route}",
                                     {"model": "nope", "messages": [], "input": "x"})
        assert status == 404 and json.loads(raw) == {"error": "model 'nope' not found"}
    status, _, raw = await _post(http, f"{ollama.url}/v1/chat/completions",
                                 {**CHAT, "model": "nope"})
    assert status == 404
    assert json.loads(raw)["error"] == {"message": "model 'nope' not found",
                                        "type": "not_found_error", "param": None, "code": None}


# -- OpenAI layer ----------------------------------------------------------------------

async def test_v1_chat_sse_ends_with_done(ollama: OllamaFake,
                                          http: aiohttp.ClientSession) -> None:
    status, ctype, raw = await _post(http, f"{ollama.url}/v1/chat/completions",
                                     {**CHAT, "stream": True, "max_tokens": 4})
    assert (status, ctype) == (200, "text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw[:-2].split(b"\n\n")
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]


async def test_v1_with_the_openai_sdk(ollama: OllamaFake) -> None:
    client = _client(ollama)
    try:
        resp = await client.chat.completions.create(model="llama3.2:3b", max_tokens=3,
                                                    messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].finish_reason == "length"
        assert resp.usage is not None and resp.usage.completion_tokens == 3
        stream = await client.chat.completions.create(
            model="llama3.2:3b", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi"}])
        chunks = [c async for c in stream]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-2].choices[0].finish_reason == "stop"
        comp = await client.completions.create(model="qwen2:0.5b", prompt="Once", max_tokens=2)
        assert comp.object == "text_completion" and comp.choices[0].text
        comp_stream = await client.completions.create(model="qwen2:0.5b", prompt="Once",
                                                      stream=True)
        assert "".join([c.choices[0].text async for c in comp_stream if c.choices])
        emb = await client.embeddings.create(model="llama3.2:3b", input=["a", "b"])
        assert [d.index for d in emb.data] == [0, 1] and emb.usage.prompt_tokens == 2
        models = await client.models.list()
        assert [m.id for m in models.data] == MODELS
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope",
                                                 messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()


# -- test controls ---------------------------------------------------------------------

async def test_controls_and_stats(ollama: OllamaFake, http: aiohttp.ClientSession) -> None:
    before = ollama.stats()["requests"].get("qwen2:0.5b", 0)
    await _post(http, f"{ollama.url}/api/chat", {**CHAT, "model": "qwen2:0.5b"})
    assert ollama.stats()["requests"]["qwen2:0.5b"] == before + 1
    ollama.control(pull="phi3:mini")
    try:
        async with http.get(f"{ollama.url}/api/tags") as resp:
            assert (await resp.json())["models"][0]["name"] == "phi3:mini"  # newest first
    finally:
        ollama.control(delete="phi3:mini")
    ollama.control(healthy=False)
    try:
        async with http.get(f"{ollama.url}/api/version") as resp:
            assert resp.status == 503
    finally:
        ollama.control(healthy=True)
