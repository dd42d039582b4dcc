"""The request caps of ``caps.py`` on the routes beyond OpenAI's chat, completions and
embeddings, each read where that API keeps it (messages counted; prompt text counted;
the generation limit):

- ``/responses``: ``input`` items; ``instructions`` and ``input`` text;
  ``max_output_tokens``
- ``/messages``: ``messages``; ``system`` and the messages' text blocks; ``max_tokens``
- ``/messages/count_tokens``: as ``/messages``, no generation limit
- ``/api/chat``: ``messages``; their contents; ``options.num_predict``
- ``/api/generate``: ``system`` and ``prompt``; ``options.num_predict``
- ``/api/embed``, ``/api/embeddings``: ``input`` (or ``prompt``)
- ``/rerank``: ``query`` and ``documents``; ``/tokenize``: ``content``

A generation limit above the cap, or negative ("no limit"), is clamped to it; an absent
one is set to it, so every generation stays bounded and chargeable, as on chat.
"""

from __future__ import annotations

from typing import Any

from hub.admission.caps import (
    Caps,
    PromptTooLong,
    TooManyMessages,
    _as_int,
    _prompt_chars,
    _text_len,
    check_caps,
    requested_tokens,
)

_OPENAI = frozenset({"/chat/completions", "/completions", "/embeddings"})


def _blocks_len(content: object) -> int:
    """Text of a string or of a list of blocks (``text``, tool results' ``content``)."""
    if isinstance(content, str):
        return len(content)
    total = 0
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                total += len(block)
            elif isinstance(block, dict):
                total += _text_len(block.get("text")) + _blocks_len(block.get("content"))
                if isinstance(block.get("output"), str):  # Responses function_call_output
                    total += len(block["output"])
    return total


def _messages_len(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(_blocks_len(m.get("content")) for m in messages if isinstance(m, dict))


def _chars(route: str, p: dict[str, Any]) -> int:
    if route == "/responses":
        return _blocks_len(p.get("instructions")) + _blocks_len(p.get("input"))
    if route in ("/messages", "/messages/count_tokens"):
        return _blocks_len(p.get("system")) + _messages_len(p.get("messages"))
    if route == "/api/chat":
        return _messages_len(p.get("messages"))
    if route == "/api/generate":
        return _blocks_len(p.get("system")) + _blocks_len(p.get("prompt"))
    if route == "/api/embed":
        return _prompt_chars(p.get("input"))
    if route == "/api/embeddings":
        return _blocks_len(p.get("prompt"))
    if route == "/rerank":
        return _blocks_len(p.get("query")) + _prompt_chars(p.get("documents"))
    if route == "/tokenize":
        return _prompt_chars(p.get("content"))
    return 0


def _messages(route: str, p: dict[str, Any]) -> object:
    if route == "/responses":
        return p.get("input")
    if route in ("/messages", "/messages/count_tokens", "/api/chat"):
        return p.get("messages")
    return None


def _limit(route: str, p: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Where the route keeps its generation limit: (the object, the key)."""
    if route == "/responses":
        return p, "max_output_tokens"
    if route == "/messages":
        return p, "max_tokens"
    if route in ("/api/chat", "/api/generate"):
        options = p.get("options")
        return (options if isinstance(options, dict) else {}), "num_predict"
    return None


def check_route_caps(route: str, payload: dict[str, Any], caps: Caps) -> dict[str, Any] | None:
    """:func:`hub.admission.caps.check_caps` for ``route``: raise a 400/413 HubError if
    the request breaks a cap; return a copy with the generation limit clamped (or set),
    or None when nothing had to change."""
    if route in _OPENAI:
        return check_caps(route, payload, caps)
    messages = _messages(route, payload)
    if (caps.max_messages is not None and isinstance(messages, list)
            and len(messages) > caps.max_messages):
        raise TooManyMessages(f"Too many messages: {len(messages)}; this API key may send "
                              f"at most {caps.max_messages}", param="messages")
    if caps.max_prompt_chars is not None:
        chars = _chars(route, payload)
        if chars > caps.max_prompt_chars:
            raise PromptTooLong(f"Prompt is {chars} characters; this API key may send "
                                f"at most {caps.max_prompt_chars}")
    cap = caps.max_tokens_cap
    where = _limit(route, payload)
    if cap is None or where is None:
        return None
    holder, key = where
    value = holder.get(key)
    if value is not None:
        n = _as_int(value, key)
        if 0 <= n <= cap and isinstance(value, int):
            return None
        value = min(n, cap) if n >= 0 else cap
    else:
        value = cap
    out = dict(payload)
    if holder is payload:
        out[key] = value
    else:
        out["options"] = {**holder, key: value}
    return out


def route_requested_tokens(route: str, payload: dict[str, Any]) -> int:
    """Completion tokens a request on ``route`` may generate (0 if it sets no limit)."""
    if route in _OPENAI:
        return requested_tokens(payload)
    where = _limit(route, payload)
    if where is None:
        return 0
    value = where[0].get(where[1])
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
