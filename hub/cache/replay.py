"""A stored answer sent again: whole, byte for byte, or as the SSE stream the worker
would have sent.

A stored answer is always a whole OpenAI JSON answer (the cache is filled from
non-stream answers only). For a streamed request it is cut into
``chat.completion.chunk`` events (``text_completion`` on /completions), as OpenAI
streams them: per choice a role delta, one content delta holding the whole text (and
its logprobs), a final delta with ``finish_reason``; then a ``usage`` chunk with no
choices if the request asked ``stream_options.include_usage``; then ``data: [DONE]``.
Building the events is pure (:func:`sse_events`); the writers only send them.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from hub.cache.store import Entry
from hub.forward.call import Call
from hub.forward.headers import answer_headers

DONE = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_LLAMA_EXTRAS = ("timings",)  # the worker's own fields, not part of a chunk


def replayable(route: str, doc: object) -> bool:
    """True if ``doc`` (a parsed answer) can be stored: for chat and completions, an
    answer with choices :func:`sse_events` can stream; for embeddings, a JSON object."""
    if not isinstance(doc, dict) or "error" in doc:
        return False
    if route == "/embeddings":
        return isinstance(doc.get("data"), list)
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        if route == "/chat/completions":
            message = choice.get("message")
            if not isinstance(message, dict) or not isinstance(
                    message.get("content"), str | None):
                return False
        elif not isinstance(choice.get("text"), str):
            return False
    return True


def _chunk(base: dict[str, Any], choices: list[dict[str, Any]]) -> bytes:
    return b"data: " + _dumps({**base, "choices": choices}).encode() + b"\n\n"


def sse_events(route: str, doc: dict[str, Any], include_usage: bool) -> bytes:
    """The whole SSE body for a stored chat or completions answer (``replayable``)."""
    chat = route == "/chat/completions"
    base = {k: v for k, v in doc.items()
            if k not in ("choices", "usage", "object", *_LLAMA_EXTRAS)}
    base["object"] = "chat.completion.chunk" if chat else "text_completion"
    out: list[bytes] = []
    for i, choice in enumerate(doc["choices"]):
        index = choice.get("index", i)
        logprobs = choice.get("logprobs")
        if chat:
            message = choice["message"]
            first = {"role": message.get("role") or "assistant", "content": ""}
            out.append(_chunk(base, [{"index": index, "delta": first, "logprobs": None,
                                      "finish_reason": None}]))
            delta = {k: v for k, v in message.items() if k != "role" and v is not None}
            if delta:
                out.append(_chunk(base, [{"index": index, "delta": delta,
                                          "logprobs": logprobs, "finish_reason": None}]))
            end: dict[str, Any] = {"index": index, "delta": {}, "logprobs": None,
                                   "finish_reason": choice.get("finish_reason")}
        else:
            out.append(_chunk(base, [{"index": index, "text": choice["text"],
                                      "logprobs": logprobs, "finish_reason": None}]))
            end = {"index": index, "text": "", "logprobs": None,
                   "finish_reason": choice.get("finish_reason")}
        out.append(_chunk(base, [end]))
    if include_usage and isinstance(doc.get("usage"), dict):
        out.append(b"data: " + _dumps({**base, "choices": [], "usage": doc["usage"]}).encode()
                   + b"\n\n")
    out.append(DONE)
    return b"".join(out)


def _headers(call: Call, content_type: str) -> dict[str, str]:
    return answer_headers(call, content_type, None)  # call.cache is HIT: no worker


def answer_whole(call: Call, entry: Entry) -> web.Response:
    """The stored answer, the same bytes the first client got."""
    call.status = 200
    call.answered = True
    return web.Response(status=200, body=entry.body,
                        headers=_headers(call, entry.content_type))


async def answer_stream(request: web.Request, call: Call, entry: Entry,
                        payload: dict[str, Any]) -> web.StreamResponse:
    """The stored answer as an event stream, in one write."""
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    body = sse_events(call.route, json.loads(entry.body), include_usage)
    headers = _headers(call, "text/event-stream")
    headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    out = web.StreamResponse(status=200, headers=headers)
    await out.prepare(request)
    try:
        await out.write(body)
        await out.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        call.status, call.error = 499, "client_disconnected"
        return out
    call.status = 200
    call.answered = True
    return out
