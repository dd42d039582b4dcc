"""Ollama's API at the hub over OpenAI workers: requests, answers, NDJSON streams; and
Ollama workers' own streams passed through line by line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ollama import ChatResponse, EmbedResponse, GenerateResponse

from hub.backends import backend_for
from hub.backends.ollama_api import (
    NativeOllama,
    NdjsonCheck,
    OllamaApiStreamError,
    OllamaOverOpenAI,
    SseToNdjson,
    chat_body,
    generate_body,
    load_request,
)
from hub.config.workers import WorkerSpec


def _sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def _chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> bytes:
    if content is not None:
        delta["content"] = content
    return _sse({"id": "c", "object": "chat.completion.chunk", "model": "tiny",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


USAGE = _sse({"id": "c", "object": "chat.completion.chunk", "choices": [],
              "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
              "timings": {"prompt_ms": 1.5, "predicted_ms": 2.5}})
STREAM = (_chunk("", role="assistant") + _chunk("Hel") + _chunk("lo, 世界")
          + _chunk(None, "length") + USAGE + b"data: [DONE]\n\n")


def _lines(out: bytes) -> list[dict[str, Any]]:
    assert out.endswith(b"\n")
    return [json.loads(line) for line in out.splitlines()]


def test_chat_request_maps_messages_options_and_format() -> None:
    body = chat_body({
        "model": "m", "format": "json", "keep_alive": "5m",
        "options": {"temperature": 0.2, "num_predict": 16, "top_k": 5, "stop": "\n",
                    "num_ctx": 4096},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "look", "arguments": {"q": 1}}}]},
            {"role": "tool", "content": "a cat", "tool_name": "look"},
        ]}, llamacpp=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16 and body["temperature"] == 0.2 and body["top_k"] == 5
    assert body["stop"] == ["\n"] and "num_ctx" not in body
    assert body["response_format"] == {"type": "json_object"}
    user = body["messages"][1]["content"]
    assert user[0] == {"type": "text", "text": "what is this?"}
    assert user[1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="
    call = body["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "look", "arguments": '{"q": 1}'}
    assert body["messages"][3]["tool_call_id"] == call["id"]
    plain = chat_body({"model": "m", "stream": False, "messages": [],
                       "options": {"top_k": 5, "num_predict": -1},
                       "format": {"type": "object"}})
    assert "top_k" not in plain and "max_tokens" not in plain  # no llama.cpp extras; no limit
    assert plain["stream"] is False and "stream_options" not in plain
    assert plain["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_generate_uses_the_chat_template_unless_raw() -> None:
    body = generate_body({"model": "m", "prompt": "hi", "system": "sys", "stream": False})
    assert body["messages"] == [{"role": "system", "content": "sys"},
                                {"role": "user", "content": "hi"}]
    t = OllamaOverOpenAI("/api/generate", "/v1", llamacpp=True)
    assert json.loads(t.request(b'{"model": "m", "prompt": "hi", "raw": true}'))["prompt"] == "hi"
    assert t.path == "/v1/completions"
    t = OllamaOverOpenAI("/api/generate", "", llamacpp=False)
    t.request(b'{"model": "m", "prompt": "hi"}')
    assert t.path == "/chat/completions"


def test_backends_choose_native_or_translated() -> None:
    assert isinstance(backend_for("ollama").translator(WorkerSpec("o", "http://o", kind="ollama"),
                                                      "/api/chat"), NativeOllama)
    llama = backend_for("llamacpp").translator(WorkerSpec("l", "http://l"), "/api/embed")
    assert isinstance(llama, OllamaOverOpenAI) and llama.path == "/v1/embeddings"
    assert backend_for("llamacpp").translator(WorkerSpec("l", "http://l"), "/messages") is None
    assert backend_for("llamacpp").request_url(WorkerSpec("l", "http://l"),
                                               "/tokenize") == "http://l/tokenize"
    assert backend_for("ollama").request_url(WorkerSpec("o", "http://o", kind="ollama"),
                                             "/api/generate") == "http://o/api/generate"


def test_non_stream_answers_are_ollamas() -> None:
    t = OllamaOverOpenAI("/api/chat", "/v1", llamacpp=True)
    t.request(b'{"model": "tiny", "stream": false, "messages": [{"role": "user", "content": "x"}]}')
    answer = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "",
        "tool_calls": [{"id": "1", "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 2}'}}]}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}
    doc = json.loads(t.response(200, json.dumps(answer).encode()))
    parsed = ChatResponse(**doc)
    assert parsed.done and parsed.done_reason == "stop" and parsed.model == "tiny"
    assert parsed.prompt_eval_count == 4 and parsed.eval_count == 2
    assert parsed.message.tool_calls is not None
    assert parsed.message.tool_calls[0].function.arguments == {"a": 2}
    err = t.response(400, b'{"error": {"code": 400, "message": "bad thing", "type": "x"}}')
    assert json.loads(err) == {"error": "bad thing"}

    e = OllamaOverOpenAI("/api/embed", "/v1", llamacpp=True)
    e.request(b'{"model": "tiny", "input": "a"}')
    emb = {"data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}],
           "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    out = EmbedResponse(**json.loads(e.response(200, json.dumps(emb).encode())))
    assert out.embeddings == [[0.1], [0.2]] and out.prompt_eval_count == 3
    legacy = OllamaOverOpenAI("/api/embeddings", "/v1", llamacpp=True)
    assert json.loads(legacy.request(b'{"model": "m", "prompt": "p"}'))["input"] == ["p"]
    assert json.loads(legacy.response(200, json.dumps(emb).encode())) == {"embedding": [0.1]}


def test_stream_becomes_ndjson_with_a_final_done_line() -> None:
    lines = _lines(SseToNdjson("tiny").feed(STREAM))
    assert [line["message"]["content"] for line in lines] == ["Hel", "lo, 世界", ""]
    final = ChatResponse(**lines[-1])
    assert final.done and final.done_reason == "length"
    assert (final.prompt_eval_count, final.eval_count) == (7, 3)
    assert final.eval_duration == 2_500_000 and final.total_duration == 4_000_000
    assert not any(line["done"] for line in lines[:-1])
    gen = _lines(SseToNdjson("tiny", generate=True).feed(STREAM))
    assert [GenerateResponse(**line).response for line in gen] == ["Hel", "lo, 世界", ""]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_stream_may_be_split_anywhere(cuts: list[int]) -> None:
    t = SseToNdjson("tiny")
    out = b""
    last = 0
    for cut in sorted(cuts):
        out += t.feed(STREAM[last:cut])
        last = cut
    out += t.feed(STREAM[last:]) + t.close()
    texts = [line["message"]["content"] for line in _lines(out)]
    assert texts == ["Hel", "lo, 世界", ""]


def test_stream_cut_short_raises_with_what_came_before() -> None:
    t = SseToNdjson("tiny")
    out = t.feed(_chunk("a") + _chunk("b") + b'data: {"choi')
    assert len(_lines(out)) == 2
    with pytest.raises(OllamaApiStreamError) as err:
        t.close()
    assert err.value.partial == b""
    with pytest.raises(OllamaApiStreamError):
        SseToNdjson("tiny").feed(_chunk("a") + b"data: {not json}\n\n")


def test_an_error_event_is_ollamas_error_line_and_ends_the_stream() -> None:
    t = SseToNdjson("tiny")
    out = t.feed(_chunk("a") + _sse({"error": {"message": "slot gone"}}) + _chunk("late"))
    assert _lines(out)[-1] == {"error": "slot gone"}
    assert t.close() == b""


def test_streamed_tool_calls_come_whole_before_the_final_line() -> None:
    parts = [_chunk(None, tool_calls=[{"index": 0, "id": "x", "type": "function",
                                       "function": {"name": "get", "arguments": '{"ci'}}]),
             _chunk(None, tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]),
             _chunk(None, "tool_calls"), b"data: [DONE]\r\n\r\n"]
    lines = _lines(SseToNdjson("tiny").feed(b"".join(parts)))
    calls = ChatResponse(**lines[0]).message.tool_calls
    assert calls is not None and calls[0].function.name == "get"
    assert calls[0].function.arguments == {"city": "Oslo"}
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"


def test_load_requests() -> None:
    assert load_request("/api/chat", {"model": "m"}) == "load"
    assert load_request("/api/generate", {"model": "m", "keep_alive": 0}) == "unload"
    assert load_request("/api/chat", {"model": "m", "messages": [{"role": "user"}]}) is None
    t = OllamaOverOpenAI("/api/generate", "/v1", llamacpp=True)
    sent = json.loads(t.request(b'{"model": "tiny"}'))
    assert sent["max_tokens"] == 1 and sent["stream"] is True
    lines = _lines(t.stream().feed(STREAM))
    assert lines == [{"model": "tiny", "created_at": lines[0]["created_at"], "response": "",
                      "done_reason": "load", "done": True}]
    assert json.loads(t.response(200, b'{"choices": []}'))["done_reason"] == "load"


NATIVE = (b'{"model":"m","message":{"role":"assistant","content":"a"},"done":false}\n'
          b'{"model":"m","message":{"role":"assistant","content":"b"},"done":false}\n'
          b'{"model":"m","message":{"role":"assistant","content":""},"done":true,'
          b'"eval_count":2}\n')


@given(st.lists(st.integers(min_value=0, max_value=len(NATIVE)), max_size=8))
def test_native_streams_pass_unchanged_in_whole_lines(cuts: list[int]) -> None:
    check = NdjsonCheck()
    pieces: list[bytes] = []
    last = 0
    for cut in sorted(cuts):
        pieces.append(check.feed(NATIVE[last:cut]))
        last = cut
    pieces += [check.feed(NATIVE[last:]), check.close()]
    assert b"".join(pieces) == NATIVE
    assert all(p.endswith(b"\n") for p in pieces if p)


def test_native_stream_without_its_done_line_is_cut() -> None:
    check = NdjsonCheck()
    head = NATIVE.split(b"\n")[0] + b"\n"
    assert check.feed(head + b'{"model":"m","mess') == head
    with pytest.raises(OllamaApiStreamError):
        check.close()
    ended = NdjsonCheck()
    assert ended.feed(b'{"error":"out of memory"}\n{"x":1}\n') == b'{"error":"out of memory"}\n'
    assert ended.close() == b""
