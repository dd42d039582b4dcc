"""A relayed stream put back together: what the SSE replay makes, assembled again, is
the answer it came from; streams the cache cannot stand behind are refused."""

from __future__ import annotations

import json
from typing import Any

from hub.cache.assemble import RecordingTap, assemble, tap_for
from hub.cache.replay import sse_events
from hub.forward.call import Call
from hub.observe.usage import StreamTap, Usage

CHAT: dict[str, Any] = {
    "id": "c1", "object": "chat.completion", "created": 5, "model": "tiny",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


def chunk(**fields: Any) -> bytes:
    return b"data: " + json.dumps({"id": "c1", "created": 5, "model": "tiny",
                                   "object": "chat.completion.chunk", **fields}).encode() \
        + b"\n\n"


def test_round_trip_through_the_replay() -> None:
    events = sse_events("/chat/completions", CHAT, include_usage=True)
    assert assemble("/chat/completions", events, None) == CHAT
    text = {"id": "t", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": "abc", "logprobs": None,
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
    assert assemble("/completions", sse_events("/completions", text, True), None) == text


def test_worker_style_stream_with_counts_from_timings() -> None:
    events = b"".join([
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": None},
                        "finish_reason": None}]),
        b": keep-alive\n\n",
        chunk(choices=[{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}],
              timings={"predicted_n": 2}),
        b"data: [DONE]\n\n"])
    doc = assemble("/chat/completions", events, Usage(prompt_tokens=7, completion_tokens=2))
    assert doc is not None
    assert doc["choices"] == [{"index": 0, "message": {"role": "assistant",
                                                       "content": "Hello"},
                               "finish_reason": "length"}]
    assert doc["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert "timings" not in doc


def test_refused() -> None:
    end = chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
    tool = chunk(choices=[{"index": 0, "delta": {"tool_calls": [{"index": 0}]},
                           "finish_reason": None}])
    lp = chunk(choices=[{"index": 0, "delta": {"content": "a"},
                         "logprobs": {"content": []}, "finish_reason": None}])
    error = b'data: {"error": {"message": "cut"}}\n\n'
    for events in (end,  # no [DONE]
                   tool + end + b"data: [DONE]\n\n",
                   lp + end + b"data: [DONE]\n\n",
                   error + b"data: [DONE]\n\n",
                   chunk(choices=[{"index": 0, "delta": {"content": "a"},
                                   "finish_reason": None}]) + b"data: [DONE]\n\n",
                   b"data: {not json\n\ndata: [DONE]\n\n",
                   b"data: [DONE]\n\n"):
        assert assemble("/chat/completions", events, None) is None, events


def test_recording_tap_keeps_batches_within_its_budget() -> None:
    tap = RecordingTap(0.0, budget=10)
    tap.seen(b"12345", 0.1)
    tap.seen(b"678", 0.2)
    assert tap.events == [b"12345", b"678"] and tap.batches == 2
    tap.seen(b"abc", 0.3)  # over the budget: the recording is dropped, counting goes on
    assert tap.events is None and tap.batches == 3 and tap.gaps == 2
    call = Call(request_id="r", route="/chat/completions")
    assert type(tap_for(call, 0.0)) is StreamTap
    call.cache_record = 100
    assert isinstance(tap_for(call, 0.0), RecordingTap)
