"""Per-tenant request caps, checked on the parsed body before a worker is chosen.

* ``max_messages``: chat messages per request (400 ``too_many_messages``).
* ``max_prompt_chars``: characters of prompt text -- chat message contents
  (plain strings and the text of content-part lists) and tool-call arguments,
  or the ``prompt`` / ``input`` of completions and embeddings (a token-id prompt
  counts one character per token) (413 ``prompt_too_long``).
* ``max_tokens_cap``: ``max_tokens``, ``max_completion_tokens`` and llama.cpp's
  ``n_predict`` are clamped to the cap (negative values, "unlimited" to
  llama.cpp, too); when none is sent, ``max_tokens`` is set to the cap so every
  generation is bounded and chargeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.errors import BadRequest, BodyTooLarge

GENERATING_ROUTES = ("/chat/completions", "/completions")
MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "n_predict")
_PROMPT_FIELD = {"/completions": "prompt", "/embeddings": "input"}


@dataclass(frozen=True, slots=True)
class Caps:
    max_messages: int | None = None
    max_prompt_chars: int | None = None
    max_tokens_cap: int | None = None


class TooManyMessages(BadRequest):
    code = "too_many_messages"


class PromptTooLong(BodyTooLarge):
    code = "prompt_too_long"


def _text_len(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += len(text)
    return total


def _chat_chars(messages: list[Any]) -> int:
    total = 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        total += _text_len(msg.get("content"))
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                args = fn.get("arguments") if isinstance(fn, dict) else None
                if isinstance(args, str):
                    total += len(args)
    return total


def _prompt_chars(prompt: object) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    total = 0
    if isinstance(prompt, list):
        for item in prompt:
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, list):
                total += len(item)  # token ids
            else:
                total += 1  # a single token id
    return total


def prompt_chars(route: str, payload: dict[str, Any]) -> int:
    """Characters of prompt text in a parsed request body (see module docstring)."""
    if route == "/chat/completions":
        messages = payload.get("messages")
        return _chat_chars(messages) if isinstance(messages, list) else 0
    field = _PROMPT_FIELD.get(route)
    return _prompt_chars(payload.get(field)) if field else 0


def _as_int(value: object, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise BadRequest(f"'{field}' must be an integer", param=field)


def check_caps(route: str, payload: dict[str, Any], caps: Caps) -> dict[str, Any] | None:
    """Raise a 400/413 HubError if the request breaks a cap. Return a copy of the
    payload with generation limits clamped, or None when nothing had to change."""
    if caps.max_messages is not None and route == "/chat/completions":
        messages = payload.get("messages")
        if isinstance(messages, list) and len(messages) > caps.max_messages:
            raise TooManyMessages(f"Too many messages: {len(messages)}; this API key may "
                                  f"send at most {caps.max_messages}", param="messages")
    if caps.max_prompt_chars is not None:
        chars = prompt_chars(route, payload)
        if chars > caps.max_prompt_chars:
            raise PromptTooLong(f"Prompt is {chars} characters; this API key may send "
                                f"at most {caps.max_prompt_chars}",
                                param=_PROMPT_FIELD.get(route, "messages"))
    cap = caps.max_tokens_cap
    if cap is None or route not in GENERATING_ROUTES:
        return None
    changes: dict[str, int] = {}
    present = False
    for field in MAX_TOKEN_FIELDS:
        value = payload.get(field)
        if value is None:
            continue
        present = True
        n = _as_int(value, field)
        if n < 0 or n > cap or not isinstance(value, int):
            changes[field] = min(n, cap) if n >= 0 else cap
    if not present:
        changes["max_tokens"] = cap
    if not changes:
        return None
    out = dict(payload)
    out.update(changes)
    return out


def requested_tokens(payload: dict[str, Any]) -> int:
    """Completion tokens a request may generate (largest limit sent, times ``n``);
    0 if it sets none. Call it on the payload returned by :func:`check_caps`."""
    most = 0
    for field in MAX_TOKEN_FIELDS:
        value = payload.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            most = value
    n = payload.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        most *= n
    return most
