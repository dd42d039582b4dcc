"""OpenAI <-> Ollama /api/chat translation: requests, answers, and NDJSON -> SSE streams."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from hub.backends.ollama_native import (
    DONE,
    NdjsonToSse,
    OllamaStreamError,
    chat_completion,
    chat_request,
    error_body,
)


def _line(content: str, **extra: Any) -> bytes:
    doc = {"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
           "message": {"role": "assistant", "content": content}, "done": False, **extra}
    return json.dumps(doc, ensure_ascii=False).encode() + b"\n"


def _final(**extra: Any) -> bytes:
    doc = {"model": "llama3.2", "created_at": "2023-08-04T19:22:45.499127Z",
           "message": {"role": "assistant", "content": ""}, "done_reason": "stop", "done": True,
           "total_duration": 4883583458, "load_duration": 1334875, "prompt_eval_count": 26,
           "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000}
    doc.update(extra)
    return json.dumps(doc).encode() + b"\n"


STREAM = _line("The") + _line(" sky is") + _line(" blue, naïve 世界 🌍") + _final()


def _events(sse: bytes) -> list[Any]:
    """The JSON payloads of SSE ``data:`` events; the string ``[DONE]`` for the terminator."""
    assert sse.endswith(b"\n\n")
    out: list[Any] = []
    for event in sse[:-2].split(b"\n\n"):
        assert event.startswith(b"data: "), event
        data = event[len(b"data: "):]
        out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def _translate(parts: list[bytes], **kw: Any) -> bytes:
    conv = NdjsonToSse(completion_id="chatcmpl-test", created=1700000000, **kw)
    return b"".join(conv.feed(p) for p in parts) + conv.close()


# -- requests ------------------------------------------------------------------------

def test_chat_request_maps_openai_fields() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    out = chat_request({
        "model": "llama3.2:3b", "messages": [{"role": "user", "content": "Hi"}],
        "stream": True, "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": "\n",
        "max_tokens": 16, "response_format": {"type": "json_object"}, "tools": tools})
    assert out == {
        "model": "llama3.2:3b", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
        "options": {"temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["\n"],
                    "num_predict": 16},
        "format": "json", "tools": tools}


def test_chat_request_defaults_match_ollamas_openai_layer() -> None:
    out = chat_request({"model": "m", "messages": []})
    assert out["stream"] is False  # OpenAI's default; /api/chat would stream otherwise
    assert out["options"] == {"temperature": 1.0, "top_p": 1.0}
    assert "format" not in out and "tools" not in out


def test_chat_request_json_schema_and_stop_list() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    out = chat_request({"model": "m", "messages": [], "stop": ["a", "b"],
                        "max_completion_tokens": 3,
                        "response_format": {"type": "json_schema",
                                            "json_schema": {"name": "x", "schema": schema}}})
    assert out["format"] == schema
    assert out["options"]["stop"] == ["a", "b"]
    assert out["options"]["num_predict"] == 3


def test_chat_request_content_parts_and_images() -> None:
    out = chat_request({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]}]})
    assert out["messages"] == [{"role": "user", "content": "What is this?",
                                "images": ["iVBORw0K"]}]
    with pytest.raises(ValueError, match="data: URLs"):
        chat_request({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})


def test_chat_request_tool_round_trip_messages() -> None:
    out = chat_request({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"}]})
    assert out["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert out["messages"][2] == {"role": "tool", "content": "22C", "tool_name": "get_weather"}
    with pytest.raises(ValueError, match="arguments"):
        chat_request({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]})


# -- non-stream answers --------------------------------------------------------------

def test_chat_completion_from_documented_answer() -> None:
    resp = json.loads(_final(message={"role": "assistant", "content": "Hello! How are you?"}))
    out = chat_completion(resp, completion_id="chatcmpl-1", created=1)
    ChatCompletion.model_validate(out)
    assert out["choices"][0] == {"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello! How are you?"}}
    assert out["usage"] == {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308}
    assert out["model"] == "llama3.2" and out["id"] == "chatcmpl-1"


def test_chat_completion_length_and_missing_fields() -> None:
    out = chat_completion({"model": "m", "message": {"role": "assistant", "content": "x"},
                           "done": True, "done_reason": "length", "eval_count": 1})
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}
    old = chat_completion({"model": "m", "message": {"role": "assistant", "content": "x"},
                           "done": True})  # versions before done_reason
    assert old["choices"][0]["finish_reason"] == "stop"


def test_chat_completion_tool_calls() -> None:
    out = chat_completion({"model": "llama3.2", "done": True, "done_reason": "stop",
                           "message": {"role": "assistant", "content": "", "tool_calls": [
                               {"function": {"name": "get_current_weather", "arguments": {
                                   "format": "celsius", "location": "Paris, FR"}}}]}})
    ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"format": "celsius",
                                                         "location": "Paris, FR"}


def test_error_body_wraps_ollama_errors() -> None:
    assert error_body(404, b'{"error":"model \'x\' not found"}') == {"error": {
        "message": "model 'x' not found", "type": "not_found_error", "param": None,
        "code": None}}
    assert error_body(500, b"boom")["error"]["type"] == "api_error"


# -- streams -------------------------------------------------------------------------

def test_stream_whole() -> None:
    events = _events(_translate([STREAM]))
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert {c.id for c in chunks} == {"chatcmpl-test"}
    assert {c.created for c in chunks} == {1700000000}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "stop"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == \
        "The sky is blue, naïve 世界 🌍"


def test_stream_split_byte_by_byte_is_identical() -> None:
    whole = _translate([STREAM])
    assert _translate([STREAM[i:i + 1] for i in range(len(STREAM))]) == whole


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_stream_any_split_is_identical(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    parts = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert _translate(parts) == _translate([STREAM])


def test_stream_done_reason_length() -> None:
    events = _events(_translate([_line("a") + _final(done_reason="length")]))
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_stream_documented_final_without_message_or_done_reason() -> None:
    final = (b'{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","done":true,'
             b'"total_duration":4883583458,"eval_count":282}')
    events = _events(_translate([_line("The") + final]))  # no trailing newline either
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


def test_stream_tool_calls() -> None:
    call = {"id": "call_abc", "function": {"index": 0, "name": "get_weather",
                                           "arguments": {"city": "Paris"}}}
    line = json.dumps({"model": "m", "message": {"role": "assistant", "content": "",
                                                 "tool_calls": [call]}, "done": False})
    events = _events(_translate([line.encode() + b"\n" + _final()]))
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    (tc,) = chunks[0].choices[0].delta.tool_calls or []
    assert (tc.index, tc.id, tc.type) == (0, "call_abc", "function")
    assert tc.function is not None and tc.function.name == "get_weather"
    assert json.loads(tc.function.arguments or "") == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_include_usage() -> None:
    events = _events(_translate([STREAM], include_usage=True))
    usage_chunk = ChatCompletionChunk.model_validate(events[-2])
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.total_tokens == 308
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_stream_ignores_anything_after_done() -> None:
    conv = NdjsonToSse()
    out = conv.feed(_line("a") + _final() + _line("late"))
    assert conv.done and out.endswith(DONE) and b"late" not in out
    assert conv.feed(_line("later")) == b""
    assert conv.close() == b""


def test_stream_in_band_error_keeps_partial_output() -> None:
    conv = NdjsonToSse()
    with pytest.raises(OllamaStreamError, match="out of memory") as err:
        conv.feed(_line("Hello") + b'{"error":"out of memory"}\n')
    assert b"Hello" in err.value.partial


def test_stream_bad_line_and_early_end() -> None:
    with pytest.raises(OllamaStreamError, match="bad NDJSON"):
        NdjsonToSse().feed(b"{not json}\n")
    conv = NdjsonToSse()
    conv.feed(_line("Hel"))
    with pytest.raises(OllamaStreamError, match="ended before"):
        conv.close()
