"""A streamed answer put back together as the whole answer the cache stores.

For a cacheable streamed request (a miss, or ``no-cache``), the relay's tap is a
:class:`RecordingTap`: besides the accounting it keeps a reference to each batch of
events the relay wrote (bytes it holds already: no copy, no parsing per chunk), up to
a byte budget past which it gives up. Once the whole stream went out, :func:`assemble`
parses the events once and builds the ``chat.completion`` (or ``text_completion``) a
non-stream request would have got: role and text concatenated per choice, the last
``finish_reason``, ``usage`` from the stream's usage chunk or, without one, from the
counts the worker reported (llama.cpp's final ``timings``). A stream that carries
anything else (tool-call deltas, logprobs, an error event) is not stored.
"""

from __future__ import annotations

import json
from typing import Any

from hub.forward.call import Call
from hub.observe.usage import StreamTap, Usage

_CHAT_DELTA = frozenset({"role", "content", "reasoning_content"})
_HEAD = ("id", "created", "model", "system_fingerprint")


class RecordingTap(StreamTap):
    """A :class:`StreamTap` that also keeps the batches of events, up to ``budget``
    bytes (``events`` is None once over it)."""

    __slots__ = ("budget", "events")

    def __init__(self, first_at: float, budget: int) -> None:
        super().__init__(first_at)
        self.budget = budget
        self.events: list[bytes] | None = []

    def seen(self, events: bytes, now: float) -> None:
        super().seen(events, now)
        kept = self.events
        if kept is not None:
            self.budget -= len(events)
            if self.budget < 0:
                self.events = None
            else:
                kept.append(events)


def tap_for(call: Call, now: float) -> StreamTap:
    """The relay's tap for ``call``: recording when the cache wants its stream."""
    if call.cache_record:
        return RecordingTap(now, call.cache_record)
    return StreamTap(now)


def _data(raw: bytes) -> list[Any] | None:
    """The JSON documents of the stream's data events, up to ``[DONE]``."""
    docs: list[Any] = []
    for line in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line.startswith(b"data:"):
            if line.startswith(b"event:") and line[6:].strip() not in (b"", b"message"):
                return None  # an error event, or something this is not made for
            continue
        value = line[5:].strip()
        if value == b"[DONE]":
            return docs
        try:
            docs.append(json.loads(value))
        except (ValueError, RecursionError):
            return None
    return None  # no [DONE]: not a whole stream


def assemble(route: str, events: bytes, usage: Usage | None) -> dict[str, Any] | None:
    """The whole answer the stream ``events`` spelled out; None if it cannot be told."""
    docs = _data(events)
    if not docs:
        return None
    chat = route == "/chat/completions"
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    reported: Any = None
    for doc in docs:
        if not isinstance(doc, dict) or "error" in doc:
            return None
        for key in _HEAD:
            if key in doc and key not in head:
                head[key] = doc[key]
        if isinstance(doc.get("usage"), dict):
            reported = doc["usage"]
        parts = doc.get("choices")
        if not isinstance(parts, list):
            return None
        for part in parts:
            if not isinstance(part, dict) or part.get("logprobs") is not None:
                return None
            index = part.get("index", 0)
            if not isinstance(index, int):
                return None
            into = choices.setdefault(index, {"text": [], "reasoning": [], "role": None,
                                              "finish_reason": None})
            if part.get("finish_reason") is not None:
                into["finish_reason"] = part["finish_reason"]
            if chat:
                delta = part.get("delta")
                if not isinstance(delta, dict) or not _CHAT_DELTA.issuperset(
                        k for k, v in delta.items() if v is not None):
                    return None
                if delta.get("role"):
                    into["role"] = delta["role"]
                for field, name in (("content", "text"), ("reasoning_content", "reasoning")):
                    value = delta.get(field)
                    if isinstance(value, str):
                        into[name].append(value)
                    elif value is not None:
                        return None
            else:
                text = part.get("text")
                if not isinstance(text, str):
                    return None
                into["text"].append(text)
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None
    out: dict[str, Any] = {"id": head.get("id"),
                           "object": "chat.completion" if chat else "text_completion",
                           "created": head.get("created"), "model": head.get("model")}
    if "system_fingerprint" in head:
        out["system_fingerprint"] = head["system_fingerprint"]
    made: list[dict[str, Any]] = []
    for index in sorted(choices):
        c = choices[index]
        if chat:
            message: dict[str, Any] = {"role": c["role"] or "assistant",
                                       "content": "".join(c["text"])}
            if c["reasoning"]:
                message["reasoning_content"] = "".join(c["reasoning"])
            made.append({"index": index, "message": message,
                         "finish_reason": c["finish_reason"]})
        else:
            made.append({"index": index, "text": "".join(c["text"]), "logprobs": None,
                         "finish_reason": c["finish_reason"]})
    out["choices"] = made
    if reported is not None:
        out["usage"] = reported
    elif usage is not None:
        out["usage"] = {"prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.prompt_tokens + usage.completion_tokens}
    return out
