"""OpenAI chat completions over Ollama's native ``/api/chat``, for servers without ``/v1``.

Pure translation, no I/O:

- :func:`chat_request`: an OpenAI ``/chat/completions`` body -> an ``/api/chat`` body;
- :func:`chat_completion`: a non-stream ``/api/chat`` answer -> an OpenAI ``chat.completion``;
- :class:`NdjsonToSse`: a streamed ``/api/chat`` answer (NDJSON, fed as raw byte chunks
  split anywhere) -> OpenAI ``chat.completion.chunk`` SSE events, ending with ``[DONE]``;
- :func:`error_body`: an Ollama error answer -> OpenAI's error JSON.

Sampling defaults follow Ollama's own OpenAI layer (``temperature`` and ``top_p`` 1.0
when unset), so a request samples alike on either path.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

DONE = b"data: [DONE]\n\n"
_FINISH_REASONS = {"stop": "stop", "length": "length"}
_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")


class OllamaStreamError(Exception):
    """The NDJSON stream failed: an in-band ``{"error": ...}``, a bad line, or no final line.

    ``partial`` holds the SSE bytes translated before the failure, for the caller to
    send before ending the client stream with its own error event.
    """

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def finish_reason(done_reason: object) -> str:
    """OpenAI ``finish_reason`` for an Ollama ``done_reason`` (absent in old versions)."""
    return _FINISH_REASONS.get(done_reason, "stop") if isinstance(done_reason, str) else "stop"


# -- request -------------------------------------------------------------------

def _content(content: object) -> tuple[str, list[str]]:
    """OpenAI message content (a string or a list of parts) -> Ollama text and images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ValueError("message content must be a string or a list of parts")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url", "") if isinstance(ref, dict) else str(ref or "")
            if not isinstance(url, str):
                raise ValueError("image_url.url must be a string")
            head, sep, data = url.partition(";base64,")
            if not (head.startswith("data:") and sep):
                raise ValueError("Ollama takes images only as base64 data: URLs")
            images.append(data)
        else:
            raise ValueError(f"unsupported message content part {kind!r}")
    return "\n".join(texts), images


def _native_tool_calls(calls: object) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in calls if isinstance(calls, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise ValueError("tool_calls entries need a function")
        args = fn.get("arguments") or "{}"
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except (ValueError, RecursionError) as exc:
            raise ValueError("tool call arguments must be a JSON object") from exc
        out.append({"function": {"name": fn.get("name", ""), "arguments": parsed}})
    return out


def _messages(messages: object) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise ValueError("messages must be a list")
    tool_names: dict[str, str] = {}  # tool_call_id -> function name, for role "tool" replies
    out: list[dict[str, Any]] = []
    for msg in messages:
        if not isinstance(msg, dict):
            raise ValueError("each message must be an object")
        text, images = _content(msg.get("content"))
        native: dict[str, Any] = {"role": msg.get("role", "user"), "content": text}
        if images:
            native["images"] = images
        calls = msg.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise ValueError("tool_calls must be a list")
            native["tool_calls"] = _native_tool_calls(calls)
            for call in calls:
                if isinstance(call.get("id"), str) and call["id"]:
                    tool_names[call["id"]] = call["function"].get("name", "")
        call_id = msg.get("tool_call_id")
        name = msg.get("name") or (tool_names.get(call_id) if isinstance(call_id, str) else None)
        if msg.get("role") == "tool" and name:
            native["tool_name"] = name
        out.append(native)
    return out


def chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completions body as an ``/api/chat`` body. ValueError if malformed."""
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    options.update({k: body[k] for k in _OPTIONS if body.get(k) is not None})
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str | list):
        options["stop"] = [stop] if isinstance(stop, str) else stop
    elif stop is not None:
        raise ValueError("stop must be a string or a list of strings")
    out: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body.get("messages")),
                           "stream": body.get("stream") is True, "options": options}
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["format"] = "json"
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema")
        if isinstance(schema, dict) and "schema" in schema:
            out["format"] = schema["schema"]
    if body.get("tools"):
        out["tools"] = body["tools"]
    return out


# -- response ------------------------------------------------------------------

def _openai_tool_calls(calls: object, first_index: int | None = None) -> list[dict[str, Any]]:
    """Ollama tool calls (arguments as an object) -> OpenAI ones (arguments as a string).

    With ``first_index``, each call gets the ``index`` a streamed delta needs.
    """
    out: list[dict[str, Any]] = []
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments", {})
        entry: dict[str, Any] = {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:8]}", "type": "function",
            "function": {"name": fn.get("name", ""),
                         "arguments": args if isinstance(args, str) else json.dumps(args)}}
        if first_index is not None:
            entry = {"index": first_index + i, **entry}
        out.append(entry)
    return out


def usage(doc: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI usage from a final Ollama answer (counts are omitted there when zero)."""
    prompt = int(doc.get("prompt_eval_count") or 0)
    completion = int(doc.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_completion(resp: Mapping[str, Any], *, completion_id: str | None = None,
                    created: int | None = None) -> dict[str, Any]:
    """A non-stream ``/api/chat`` answer as an OpenAI ``chat.completion``."""
    msg = resp.get("message")
    msg = msg if isinstance(msg, dict) else {}
    calls = _openai_tool_calls(msg.get("tool_calls"))
    content = msg.get("content") or ""
    message: dict[str, Any] = {"role": "assistant",
                               "content": None if calls and not content else content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id or new_completion_id(), "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": resp.get("model", ""),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if calls
                     else finish_reason(resp.get("done_reason"))}],
        "usage": usage(resp),
    }


def error_body(status: int, raw: bytes) -> dict[str, Any]:
    """Ollama's ``{"error": "..."}`` (or any body) as OpenAI's error JSON."""
    try:
        doc = json.loads(raw)
        message = str(doc["error"]) if isinstance(doc, dict) and "error" in doc else raw.decode()
    except ValueError:
        message = raw.decode("utf-8", "replace")
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message.strip() or f"HTTP {status}", "type": kind,
                      "param": None, "code": None}}


def _sse(doc: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class NdjsonToSse:
    """Streamed ``/api/chat`` NDJSON -> OpenAI chunk events, fed raw bytes in any split.

    ``feed`` returns the events for every line completed so far; ``close`` (at upstream
    EOF) handles a last line without a newline. The ``done`` line gives the final chunk
    with ``finish_reason``, then (with ``include_usage``) a usage chunk and ``[DONE]``;
    anything after it is ignored. Failures raise :class:`OllamaStreamError`.
    """

    def __init__(self, *, completion_id: str | None = None, created: int | None = None,
                 include_usage: bool = False) -> None:
        self.completion_id = completion_id or new_completion_id()
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage
        self.done = False
        self._pending = b""
        self._role_sent = False
        self._tool_calls = 0

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return self._translate(lines)

    def close(self) -> bytes:
        out = b""
        if not self.done:
            rest, self._pending = self._pending, b""
            out = self._translate([rest])
        if not self.done:
            raise OllamaStreamError("Ollama's stream ended before its final line", out)
        return out

    def _translate(self, lines: list[bytes]) -> bytes:
        out = bytearray()
        for raw in lines:
            if self.done:
                break
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise OllamaStreamError(f"bad NDJSON line from Ollama: {exc}", bytes(out)) from exc
            if not isinstance(doc, dict):
                raise OllamaStreamError("NDJSON line is not an object", bytes(out))
            if "error" in doc:
                raise OllamaStreamError(str(doc["error"]), bytes(out))
            out += self._events(doc)
        return bytes(out)

    def _chunk(self, doc: Mapping[str, Any], choices: list[dict[str, Any]],
               **extra: Any) -> bytes:
        return _sse({"id": self.completion_id, "object": "chat.completion.chunk",
                     "created": self.created, "model": doc.get("model", ""),
                     "choices": choices, **extra})

    def _events(self, doc: Mapping[str, Any]) -> bytes:
        msg = doc.get("message")
        msg = msg if isinstance(msg, dict) else {}
        delta: dict[str, Any] = {}
        if not self._role_sent:
            delta = {"role": "assistant", "content": ""}
            self._role_sent = True
        if msg.get("content"):
            delta["content"] = msg["content"]
        calls = _openai_tool_calls(msg.get("tool_calls"), self._tool_calls)
        if calls:
            delta["tool_calls"] = calls
            self._tool_calls += len(calls)
        if doc.get("done") is not True:
            if not delta:
                return b""
            return self._chunk(doc, [{"index": 0, "delta": delta, "finish_reason": None}])
        self.done = True
        reason = "tool_calls" if self._tool_calls else finish_reason(doc.get("done_reason"))
        out = self._chunk(doc, [{"index": 0, "delta": delta, "finish_reason": reason}])
        if self.include_usage:
            out += self._chunk(doc, [], usage=usage(doc))
        return out + DONE


class NativeChat:
    """The proxy's view of one native ``/api/chat`` call: request, answer and stream."""

    path = "/api/chat"

    def __init__(self) -> None:
        self.include_usage = False

    def request(self, body: bytes) -> bytes:
        try:
            doc = json.loads(body)
        except RecursionError:  # parsed once already, but from a shallower stack
            raise ValueError("request body is nested too deeply") from None
        opts = doc.get("stream_options")
        self.include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        return json.dumps(chat_request(doc)).encode()

    def response(self, status: int, body: bytes) -> bytes:
        if status != 200:
            return json.dumps(error_body(status, body)).encode()
        return json.dumps(chat_completion(json.loads(body))).encode()

    def stream(self) -> NdjsonToSse:
        return NdjsonToSse(include_usage=self.include_usage)
