"""A stored answer replayed as SSE: the chunks the OpenAI SDK assembles back into it."""

from __future__ import annotations

import json
from typing import Any

from hub.cache.replay import replayable, sse_events

CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "tiny",
        "system_fingerprint": "b1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "timings": {"predicted_n": 2}}
TEXT = {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "tiny",
        "choices": [{"index": 0, "text": "Once", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def events(body: bytes) -> list[Any]:
    assert body.endswith(b"data: [DONE]\n\n")
    parts = body.split(b"\n\n")
    assert parts[-1] == b""
    return [json.loads(p[6:]) for p in parts[:-2]]


def test_chat_replay_chunks() -> None:
    chunks = events(sse_events("/chat/completions", CHAT, include_usage=False))
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert all(c["id"] == "chatcmpl-1" and c["model"] == "tiny" and c["created"] == 7
               and c["system_fingerprint"] == "b1" and "timings" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hello there"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert all("usage" not in c for c in chunks)


def test_chat_replay_with_usage_and_empty_content() -> None:
    doc = {**CHAT, "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                                "finish_reason": "stop"}]}
    chunks = events(sse_events("/chat/completions", doc, include_usage=True))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == CHAT["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == ""


def test_completions_replay() -> None:
    chunks = events(sse_events("/completions", TEXT, include_usage=True))
    assert [c["object"] for c in chunks] == ["text_completion"] * 3
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Once"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["usage"]["total_tokens"] == 2


def test_replayable() -> None:
    assert replayable("/chat/completions", CHAT)
    assert replayable("/completions", TEXT)
    assert replayable("/embeddings", {"object": "list", "data": []})
    assert not replayable("/chat/completions", {"error": {"message": "x"}})
    assert not replayable("/chat/completions", {"choices": []})
    assert not replayable("/chat/completions", TEXT)  # no message
    assert not replayable("/completions", CHAT)  # no text
    assert not replayable("/embeddings", [1, 2])
