"""Request caps on the routes beyond chat: each API's own fields."""

from __future__ import annotations

from typing import Any

import pytest

from hub.admission.caps import Caps, PromptTooLong, TooManyMessages
from hub.admission.route_caps import check_route_caps, route_requested_tokens

CAPS = Caps(max_messages=2, max_prompt_chars=10, max_tokens_cap=50)


@pytest.mark.parametrize("route, payload, limit", [
    ("/responses", {"input": "hi"}, ("max_output_tokens",)),
    ("/messages", {"messages": [{"role": "user", "content": "hi"}]}, ("max_tokens",)),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]},
     ("options", "num_predict")),
    ("/api/generate", {"prompt": "hi", "options": {"temperature": 0}},
     ("options", "num_predict")),
])
def test_generation_limit_set_and_clamped(route: str, payload: dict[str, Any],
                                          limit: tuple[str, ...]) -> None:
    def get(doc: dict[str, Any]) -> Any:
        for key in limit:
            doc = doc[key]
        return doc

    out = check_route_caps(route, payload, CAPS)
    assert out is not None and get(out) == 50
    assert route_requested_tokens(route, out) == 50
    with_limit = check_route_caps(route, out, CAPS)
    assert with_limit is None  # within the cap: nothing to change
    if len(limit) == 1:
        over = {**payload, limit[0]: 500}
    else:
        over = {**payload, "options": {**payload.get("options", {}), "num_predict": -1}}
    clamped = check_route_caps(route, over, CAPS)
    assert clamped is not None and get(clamped) == 50
    assert payload.get("options", {}).get("num_predict") is None  # the input is not changed


@pytest.mark.parametrize("route, payload", [
    ("/responses", {"input": [{"role": "user", "content": [{"type": "input_text",
                                                            "text": "x" * 11}]}]}),
    ("/messages", {"system": "y" * 6, "messages": [{"role": "user", "content": "x" * 5}]}),
    ("/messages/count_tokens", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * 11}]}]}),
    ("/api/chat", {"messages": [{"role": "user", "content": "x" * 11}]}),
    ("/api/generate", {"prompt": "x" * 11}),
    ("/api/embed", {"input": ["x" * 6, "y" * 5]}),
    ("/rerank", {"query": "q", "documents": ["x" * 10]}),
    ("/tokenize", {"content": "x" * 11}),
])
def test_prompt_text_is_counted(route: str, payload: dict[str, Any]) -> None:
    with pytest.raises(PromptTooLong):
        check_route_caps(route, payload, CAPS)


def test_messages_are_counted() -> None:
    three = [{"role": "user", "content": "a"}] * 3
    for route in ("/messages", "/api/chat", "/messages/count_tokens"):
        with pytest.raises(TooManyMessages):
            check_route_caps(route, {"messages": three}, CAPS)
    with pytest.raises(TooManyMessages):
        check_route_caps("/responses", {"input": three}, CAPS)


def test_routes_without_generation_are_not_clamped() -> None:
    assert check_route_caps("/rerank", {"query": "q", "documents": ["d"]}, CAPS) is None
    assert check_route_caps("/messages/count_tokens", {"messages": []}, CAPS) is None
    assert route_requested_tokens("/tokenize", {"content": "x"}) == 0


def test_openai_routes_keep_their_caps() -> None:
    out = check_route_caps("/chat/completions", {"messages": []}, CAPS)
    assert out == {"messages": [], "max_tokens": 50}
    assert route_requested_tokens("/chat/completions", {"max_tokens": 7, "n": 2}) == 14
