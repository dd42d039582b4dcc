"""check_caps: message count, prompt characters, max_tokens clamping."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hub.admission.caps import (
    Caps,
    PromptTooLong,
    TooManyMessages,
    check_caps,
    prompt_chars,
    requested_tokens,
)
from hub.errors import BadRequest


def chat(*contents: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents],
            **extra}


def test_no_caps_no_change() -> None:
    assert check_caps("/chat/completions", chat("hi", max_tokens=10**6), Caps()) is None


def test_message_count() -> None:
    caps = Caps(max_messages=2)
    assert check_caps("/chat/completions", chat("a", "b"), caps) is None
    with pytest.raises(TooManyMessages) as info:
        check_caps("/chat/completions", chat("a", "b", "c"), caps)
    assert info.value.status == 400 and info.value.param == "messages"
    assert "3" in info.value.message and "at most 2" in info.value.message


def test_prompt_chars_counts_strings_parts_and_tool_arguments() -> None:
    payload = chat("abcd", [{"type": "text", "text": "xyz"},
                            {"type": "image_url", "image_url": {"url": "data:" + "A" * 999}},
                            "pq"], None)
    payload["messages"].append({"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]})
    assert prompt_chars("/chat/completions", payload) == 4 + 3 + 2 + 7
    assert prompt_chars("/completions", {"prompt": "hello"}) == 5
    assert prompt_chars("/completions", {"prompt": ["ab", "cde"]}) == 5
    assert prompt_chars("/completions", {"prompt": [1, 2, 3]}) == 3
    assert prompt_chars("/completions", {"prompt": [[1, 2], [3]]}) == 3
    assert prompt_chars("/embeddings", {"input": ["one", "two"]}) == 6
    assert prompt_chars("/chat/completions", {"messages": "nope"}) == 0


def test_prompt_too_long_is_413() -> None:
    caps = Caps(max_prompt_chars=10)
    assert check_caps("/chat/completions", chat("0123456789"), caps) is None
    with pytest.raises(PromptTooLong) as info:
        check_caps("/chat/completions", chat("0123456789", [{"type": "text", "text": "x"}]),
                   caps)
    assert info.value.status == 413 and "11 characters" in info.value.message
    with pytest.raises(PromptTooLong) as info:
        check_caps("/embeddings", {"model": "m", "input": "x" * 11}, caps)
    assert info.value.param == "input"


@pytest.mark.parametrize(("route", "extra", "expected"), [
    ("/chat/completions", {"max_tokens": 5000}, {"max_tokens": 100}),
    ("/chat/completions", {"max_completion_tokens": 101}, {"max_completion_tokens": 100}),
    ("/chat/completions", {"max_tokens": 500, "max_completion_tokens": 50},
     {"max_tokens": 100, "max_completion_tokens": 50}),
    ("/completions", {"n_predict": -1}, {"n_predict": 100}),
    ("/completions", {"max_tokens": -1}, {"max_tokens": 100}),
    ("/completions", {"max_tokens": 64.0}, {"max_tokens": 64}),
    ("/chat/completions", {}, {"max_tokens": 100}),
])
def test_clamp(route: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    payload = chat("hi", **extra) if route == "/chat/completions" else {
        "model": "m", "prompt": "hi", **extra}
    before = copy.deepcopy(payload)
    out = check_caps(route, payload, Caps(max_tokens_cap=100))
    assert out is not None and out is not payload
    assert payload == before  # the caller's dict is untouched
    for key, value in expected.items():
        assert out[key] == value and type(out[key]) is int


def test_within_cap_is_unchanged() -> None:
    assert check_caps("/chat/completions", chat("hi", max_tokens=100),
                      Caps(max_tokens_cap=100)) is None
    assert check_caps("/embeddings", {"model": "m", "input": "x"},
                      Caps(max_tokens_cap=100)) is None


@pytest.mark.parametrize("bad", ["100", True, 1.5, [1], {"n": 1}])
def test_bad_max_tokens_is_400(bad: object) -> None:
    with pytest.raises(BadRequest) as info:
        check_caps("/chat/completions", chat("hi", max_tokens=bad), Caps(max_tokens_cap=10))
    assert info.value.status == 400 and info.value.param == "max_tokens"


def test_requested_tokens() -> None:
    assert requested_tokens({}) == 0
    assert requested_tokens({"max_tokens": 50, "n_predict": 70}) == 70
    assert requested_tokens({"max_tokens": 50, "n": 3}) == 150
    assert requested_tokens({"max_tokens": True, "n": "x"}) == 0
    out = check_caps("/chat/completions", chat("hi"), Caps(max_tokens_cap=256))
    assert out is not None and requested_tokens(out) == 256
