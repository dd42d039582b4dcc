"""Ollama's API at the hub (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings``) over workers that speak OpenAI's: llama.cpp and OpenAI-compatible
upstreams. Ollama workers get these routes natively (:class:`NativeOllama`).

Pure translation, no I/O:

- an Ollama request body -> an OpenAI ``/chat/completions``, ``/completions`` or
  ``/embeddings`` body (:meth:`OllamaOverOpenAI.request`);
- a non-stream OpenAI answer -> Ollama's JSON, with ``done: true``, ``done_reason`` and
  the eval counts from ``usage`` (durations from llama.cpp's ``timings`` when present);
- a streamed OpenAI answer (SSE, fed as raw byte chunks split anywhere) -> Ollama's
  NDJSON, one line per token, ending with the ``done: true`` line once the worker sent
  ``data: [DONE]`` (:class:`SseToNdjson`);
- an OpenAI error answer -> Ollama's ``{"error": "..."}``.

Streams end the way Ollama's do: the final ``done: true`` line, or an ``{"error": ...}``
line for an error event the worker sent. A stream the worker cut short raises
:class:`OllamaApiStreamError` (with the lines translated before it), so the relay ends
the client's stream with the hub's own error line.

Ollama's defaults are kept: ``stream`` is true unless the body says false; sampling
options map to OpenAI's fields (and llama.cpp's extra ones, for llama.cpp workers). A
chat without messages, or a generation without a prompt, asks Ollama to load (or with
``keep_alive: 0`` unload) the model: an OpenAI worker has nothing to load, so it gets a
one-token request instead (which warms its prompt cache) and the client Ollama's answer,
``done_reason: "load"`` (or ``"unload"``) and no text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Ollama option -> OpenAI body field, for every OpenAI-compatible worker.
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
            "num_predict": "max_tokens"}
# ... and the sampling fields llama-server also takes in an OpenAI body.
_LLAMACPP_OPTIONS = {"top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p",
                     "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n",
                     "mirostat": "mirostat", "mirostat_tau": "mirostat_tau",
                     "mirostat_eta": "mirostat_eta", "num_keep": "n_keep"}
_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}
_IMAGE_MAGIC = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"),
                ("UklGR", "image/webp"))


class OllamaApiStreamError(Exception):
    """The worker's stream ended before its final event, or could not be read.
    ``partial``: the NDJSON lines translated before the failure."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama prints ``created_at``."""
    t = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _line(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# -- requests --------------------------------------------------------------------

def _image_url(data: object) -> dict[str, Any]:
    if not isinstance(data, str) or not data:
        raise ValueError("images must be base64 strings")
    mime = next((m for magic, m in _IMAGE_MAGIC if data.startswith(magic)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _content(text: object, images: object) -> str | list[dict[str, Any]]:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError("message content must be a string")
    if not images:
        return text
    if not isinstance(images, list):
        raise ValueError("images must be a list")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return parts + [_image_url(i) for i in images]


def _messages(messages: object) -> list[dict[str, Any]]:
    """Ollama messages -> OpenAI ones. Ollama's tool calls carry no ids and its tool
    answers name the tool (``tool_name``), so calls get ids here and each answer is
    matched to the latest call of its tool."""
    if not isinstance(messages, list):
        raise ValueError("messages must be a list")
    out: list[dict[str, Any]] = []
    call_ids: dict[str, str] = {}
    n_calls = 0
    for msg in messages:
        if not isinstance(msg, dict):
            raise ValueError("each message must be an object")
        role = msg.get("role", "user")
        entry: dict[str, Any] = {"role": role,
                                 "content": _content(msg.get("content"), msg.get("images"))}
        calls = msg.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise ValueError("tool_calls must be a list")
            entry["tool_calls"] = []
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict):
                    raise ValueError("tool_calls entries need a function")
                n_calls += 1
                call_id = str(call.get("id") or f"call_{n_calls}")
                name = str(fn.get("name", ""))
                call_ids[name] = call_id
                args = fn.get("arguments", {})
                entry["tool_calls"].append({
                    "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": args if isinstance(args, str)
                                 else json.dumps(args)}})
        if role == "tool":
            tool = msg.get("tool_name") or msg.get("name")
            if isinstance(tool, str) and tool in call_ids:
                entry["tool_call_id"] = call_ids[tool]
        out.append(entry)
    return out


def _sampling(doc: Mapping[str, Any], llamacpp: bool) -> dict[str, Any]:
    """Ollama ``options`` -> OpenAI body fields (unknown options are dropped, as an
    OpenAI server would refuse them)."""
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError("options must be an object")
    names = {**_OPTIONS, **_LLAMACPP_OPTIONS} if llamacpp else _OPTIONS
    out: dict[str, Any] = {}
    for key, field in names.items():
        value = options.get(key)
        if value is not None:
            out[field] = value
    limit = out.get("max_tokens")
    if isinstance(limit, int | float) and limit < 0:  # -1: no limit, -2: fill the context
        del out["max_tokens"]
    stop = options.get("stop")
    if stop:
        out["stop"] = [stop] if isinstance(stop, str) else stop
    fmt = doc.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "response", "schema": fmt}}
    return out


def streams(doc: Mapping[str, Any]) -> bool:
    """Ollama streams unless the body says ``"stream": false``."""
    return doc.get("stream") is not False


def chat_body(doc: Mapping[str, Any], llamacpp: bool = False) -> dict[str, Any]:
    """An ``/api/chat`` body as an OpenAI chat completions body."""
    out: dict[str, Any] = {"model": doc.get("model"), "messages": _messages(doc.get("messages"))}
    out.update(_sampling(doc, llamacpp))
    if doc.get("tools"):
        out["tools"] = doc["tools"]
    out["stream"] = streams(doc)
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}  # for the final line's eval counts
    return out


def generate_body(doc: Mapping[str, Any], llamacpp: bool = False) -> dict[str, Any]:
    """An ``/api/generate`` body as an OpenAI body: chat completions (the model's chat
    template applies, as in Ollama), or with ``raw`` a plain completion of the prompt."""
    prompt = doc.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a string")
    out: dict[str, Any] = {"model": doc.get("model")}
    if doc.get("raw") is True:
        out["prompt"] = prompt
    else:
        messages: list[dict[str, Any]] = []
        system = doc.get("system")
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": _content(prompt, doc.get("images"))})
        out["messages"] = messages
    out.update(_sampling(doc, llamacpp))
    out["stream"] = streams(doc)
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}
    return out


def embed_body(doc: Mapping[str, Any], legacy: bool = False) -> dict[str, Any]:
    """``/api/embed`` (``input``: a string or a list) or the older ``/api/embeddings``
    (``prompt``) as an OpenAI embeddings body."""
    value = doc.get("prompt") if legacy else doc.get("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("input must be a string or a list of strings")
    out: dict[str, Any] = {"model": doc.get("model"), "input": value}
    if isinstance(doc.get("dimensions"), int):
        out["dimensions"] = doc["dimensions"]
    return out


def load_request(route: str, doc: Mapping[str, Any]) -> str | None:
    """``"load"`` or ``"unload"`` for a request that only (un)loads the model, else None."""
    if (route == "/api/chat" and not doc.get("messages")) or (
            route == "/api/generate" and not doc.get("prompt")):
        return "unload" if doc.get("keep_alive") in (0, "0", "0s", "0m") else "load"
    return None


# -- answers ---------------------------------------------------------------------

def loaded(model: str, reason: str, generate: bool = False) -> dict[str, Any]:
    """Ollama's answer to a load or unload request."""
    out: dict[str, Any] = {"model": model, "created_at": timestamp()}
    if generate:
        out["response"] = ""
    else:
        out["message"] = {"role": "assistant", "content": ""}
    out.update({"done_reason": reason, "done": True})
    return out


def error_message(raw: bytes, status: int) -> str:
    """The message of an OpenAI (or any) error body."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return raw.decode("utf-8", "replace").strip() or f"HTTP {status}"


def error_body(status: int, raw: bytes) -> bytes:
    return json.dumps({"error": error_message(raw, status)}).encode()


def counts(usage: object, timings: object) -> dict[str, int]:
    """Ollama's final-line statistics from OpenAI ``usage`` and llama.cpp ``timings``;
    the ones not known are left out, as Ollama leaves out zeros."""
    out: dict[str, int] = {}
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int):
            out["prompt_eval_count"] = prompt
        if isinstance(completion, int):
            out["eval_count"] = completion
    if isinstance(timings, dict):
        prompt_ms, predicted_ms = timings.get("prompt_ms"), timings.get("predicted_ms")
        if isinstance(prompt_ms, int | float) and isinstance(predicted_ms, int | float):
            out["prompt_eval_duration"] = int(prompt_ms * 1e6)
            out["eval_duration"] = int(predicted_ms * 1e6)
            out["total_duration"] = out["prompt_eval_duration"] + out["eval_duration"]
    return out


def _tool_calls(calls: object) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) -> Ollama's (an object)."""
    out: list[dict[str, Any]] = []
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        args: Any = fn.get("arguments") or "{}"
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {}
        out.append({"function": {"index": i, "name": fn.get("name", ""), "arguments": args}})
    return out


def _done_reason(reason: object) -> str:
    return _DONE_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def chat_answer(doc: Mapping[str, Any], model: str, generate: bool = False) -> dict[str, Any]:
    """A non-stream chat completion (or, for ``/api/generate`` with ``raw``, a text
    completion) as Ollama's answer."""
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        raise ValueError("choices[0] is not an object")
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    text = msg.get("content") if msg else choice.get("text")
    text = text if isinstance(text, str) else ""
    thinking = msg.get("reasoning_content")
    out: dict[str, Any] = {"model": model, "created_at": timestamp()}
    if generate:
        out["response"] = text
        if isinstance(thinking, str) and thinking:
            out["thinking"] = thinking
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if isinstance(thinking, str) and thinking:
            message["thinking"] = thinking
        calls = _tool_calls(msg.get("tool_calls"))
        if calls:
            message["tool_calls"] = calls
        out["message"] = message
    out.update({"done_reason": _done_reason(choice.get("finish_reason")), "done": True})
    out.update(counts(doc.get("usage"), doc.get("timings")))
    return out


def embed_answer(doc: Mapping[str, Any], model: str, legacy: bool = False) -> dict[str, Any]:
    data = doc.get("data")
    if not isinstance(data, list):
        raise ValueError("an embeddings answer needs data")
    rows = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    vectors = [row["embedding"] for row in rows]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    out: dict[str, Any] = {"model": model, "embeddings": vectors}
    usage = doc.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        out["prompt_eval_count"] = usage["prompt_tokens"]
    return out


class SseToNdjson:
    """A streamed OpenAI answer (SSE) -> Ollama NDJSON lines, fed raw bytes split anywhere.

    One line per content (or reasoning) delta; tool calls, which OpenAI streams in
    pieces, come whole in one line before the last, as Ollama sends them. ``data: [DONE]``
    gives the ``done: true`` line with ``done_reason`` and the counts of the usage event
    (and llama.cpp's timings); an error event gives Ollama's ``{"error": ...}`` line and
    ends the stream too. Anything after either is ignored.
    """

    def __init__(self, model: str, generate: bool = False, load: str | None = None) -> None:
        self.model = model
        self.generate = generate
        self.load = load  # a load request: no text, this done_reason
        self.done = False
        self._pending = b""
        self._reason: object = None
        self._usage: object = None
        self._timings: object = None
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        # SSE lines may end in CRLF, LF or CR; a data line is all this needs.
        *lines, self._pending = (self._pending + chunk).replace(b"\r\n", b"\n").replace(
            b"\r", b"\n").split(b"\n")
        return self._lines(lines)

    def close(self) -> bytes:
        out = b""
        if not self.done and self._pending:
            rest, self._pending = self._pending, b""
            out = self._lines([rest])
        if not self.done:
            raise OllamaApiStreamError("the worker's stream ended before its final event", out)
        return out

    def _lines(self, lines: list[bytes]) -> bytes:
        out = bytearray()
        for raw in lines:
            if self.done:
                break
            if not raw.startswith(b"data:"):
                continue  # event names, comments, blank lines
            data = raw[5:].strip()
            if data == b"[DONE]":
                out += self._final()
                continue
            try:
                doc = json.loads(data)
            except ValueError as exc:
                raise OllamaApiStreamError(f"unreadable event from the worker: {exc}",
                                           bytes(out)) from exc
            if not isinstance(doc, dict):
                raise OllamaApiStreamError("an event from the worker is not an object",
                                           bytes(out))
            if "error" in doc:
                self.done = True
                out += _line({"error": error_message(data, 500)})
                continue
            out += self._event(doc)
        return bytes(out)

    def _event(self, doc: Mapping[str, Any]) -> bytes:
        if doc.get("usage"):
            self._usage = doc["usage"]
        if doc.get("timings"):
            self._timings = doc["timings"]
        choices = doc.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return b""
        if choice.get("finish_reason"):
            self._reason = choice["finish_reason"]
        delta = choice.get("delta") if "delta" in choice else None
        if isinstance(delta, dict):
            text, thinking = delta.get("content"), delta.get("reasoning_content")
            for piece in delta.get("tool_calls") or ():
                self._add_call(piece)
        else:  # a text completion's chunk (``/api/generate`` with raw)
            text, thinking = choice.get("text"), None
        has_text = isinstance(text, str) and text
        has_thinking = isinstance(thinking, str) and thinking
        if not (has_text or has_thinking) or self.load:
            return b""
        line: dict[str, Any] = {"model": self.model, "created_at": timestamp()}
        if self.generate:
            line["response"] = text if has_text else ""
            if has_thinking:
                line["thinking"] = thinking
        else:
            message: dict[str, Any] = {"role": "assistant", "content": text if has_text else ""}
            if has_thinking:
                message["thinking"] = thinking
            line["message"] = message
        line["done"] = False
        return _line(line)

    def _add_call(self, piece: object) -> None:
        if not isinstance(piece, dict):
            return
        index = piece.get("index", len(self._calls))
        call = self._calls.setdefault(index if isinstance(index, int) else len(self._calls),
                                      {"name": "", "arguments": ""})
        fn = piece.get("function")
        if isinstance(fn, dict):
            if isinstance(fn.get("name"), str):
                call["name"] += fn["name"]
            if isinstance(fn.get("arguments"), str):
                call["arguments"] += fn["arguments"]

    def _final(self) -> bytes:
        self.done = True
        out = b""
        if self._calls and not self.generate:
            calls = _tool_calls([{"function": self._calls[i]} for i in sorted(self._calls)])
            out += _line({"model": self.model, "created_at": timestamp(),
                          "message": {"role": "assistant", "content": "", "tool_calls": calls},
                          "done": False})
        final: dict[str, Any] = {"model": self.model, "created_at": timestamp()}
        if self.generate:
            final["response"] = ""
        else:
            final["message"] = {"role": "assistant", "content": ""}
        if self.load:
            final.update({"done_reason": self.load, "done": True})
            return _line(final)
        final.update({"done_reason": _done_reason(self._reason), "done": True})
        final.update(counts(self._usage, self._timings))
        return out + _line(final)


class OllamaOverOpenAI:
    """The proxy's view of one Ollama-API call sent to an OpenAI-speaking worker.

    ``prefix`` is what comes between the worker's URL and an OpenAI route (``/v1`` for
    llama.cpp, nothing for an ``openai`` worker whose URL ends in ``/v1``). ``path`` is
    known once :meth:`request` has read the body (``/api/generate`` with ``raw`` goes
    to ``/completions``).
    """

    def __init__(self, route: str, prefix: str, llamacpp: bool) -> None:
        self.route = route
        self.prefix = prefix
        self.llamacpp = llamacpp
        self.model = ""
        self.load: str | None = None
        self.path = prefix + ("/embeddings" if route in ("/api/embed", "/api/embeddings")
                              else "/chat/completions")

    def request(self, body: bytes) -> bytes:
        try:
            doc = json.loads(body)
        except RecursionError:
            raise ValueError("request body is nested too deeply") from None
        self.model = str(doc.get("model", ""))
        self.load = load_request(self.route, doc)
        if self.load:
            out = {"model": doc.get("model"), "messages": [{"role": "user", "content": " "}],
                   "max_tokens": 1, "stream": streams(doc)}
        elif self.route == "/api/chat":
            out = chat_body(doc, self.llamacpp)
        elif self.route == "/api/generate":
            out = generate_body(doc, self.llamacpp)
            if "prompt" in out:
                self.path = self.prefix + "/completions"
        else:
            out = embed_body(doc, legacy=self.route == "/api/embeddings")
        return json.dumps(out).encode()

    def response(self, status: int, body: bytes) -> bytes:
        if status != 200:
            return error_body(status, body)
        doc = json.loads(body)
        if self.load:
            out = loaded(self.model, self.load, generate=self.route == "/api/generate")
        elif self.route in ("/api/embed", "/api/embeddings"):
            out = embed_answer(doc, self.model, legacy=self.route == "/api/embeddings")
        else:
            out = chat_answer(doc, self.model, generate=self.route == "/api/generate")
        return json.dumps(out, ensure_ascii=False).encode()

    def stream(self) -> SseToNdjson:
        return SseToNdjson(self.model, generate=self.route == "/api/generate", load=self.load)


class NdjsonCheck:
    """An Ollama worker's own NDJSON stream, passed through line by line as it came.

    Only whole lines are passed on; the stream is complete at the line with
    ``"done": true`` or an ``{"error": ...}`` line (Ollama's own ending either way).
    A body that ends before it raises :class:`OllamaApiStreamError`.
    """

    def __init__(self) -> None:
        self.done = False
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        data = self._pending + chunk
        end = data.rfind(b"\n") + 1
        self._pending = data[end:]
        return self._check(data[:end]) if end else b""

    def close(self) -> bytes:
        out = b""
        if not self.done and self._pending.strip():
            rest, self._pending = self._pending + b"\n", b""
            out = self._check(rest)
        if not self.done:
            raise OllamaApiStreamError("Ollama's stream ended before its final line", out)
        return out

    def _check(self, lines: bytes) -> bytes:
        pos = 0
        for line in lines.splitlines(keepends=True):
            pos += len(line)
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise OllamaApiStreamError(f"bad NDJSON line from Ollama: {exc}",
                                           lines[:pos - len(line)]) from exc
            if isinstance(doc, dict) and (doc.get("done") is True or "error" in doc):
                self.done = True
                return lines[:pos]
        return lines


class NativeOllama:
    """An Ollama-API call to an Ollama worker: the body and answer pass unchanged; a
    stream passes line by line (:class:`NdjsonCheck`)."""

    def __init__(self, route: str) -> None:
        self.path = route

    def request(self, body: bytes) -> bytes:
        return body

    def response(self, status: int, body: bytes) -> bytes:
        return body

    def stream(self) -> NdjsonCheck:
        return NdjsonCheck()
