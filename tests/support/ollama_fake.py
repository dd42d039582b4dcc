"""A conformance fake of Ollama's HTTP API, run as a real process.

It follows the documented wire format (ollama/ollama ``docs/api.md`` and
``docs/openai.md``): native ``/api/*`` routes stream NDJSON (``application/x-ndjson``,
one object per line, the last with ``done: true``, ``done_reason`` and the timing and
count fields), the OpenAI layer under ``/v1`` streams SSE ending in ``data: [DONE]``.
Unknown models get 404 ``{"error": "model 'x' not found"}`` (OpenAI's error JSON under
``/v1``). The text is deterministic filler, one token per chunk; ``num_predict`` /
``max_tokens`` sets the token count (``done_reason: length``), else ``--chunks`` do
(``done_reason: stop``). A request with ``tools`` on ``/api/chat`` calls the first tool.

Test-only routes:

- ``POST /_control`` with any of ``{"pull": name}`` (install, like ``ollama pull``),
  ``{"delete": name}``, ``{"load": name}`` / ``{"unload": name}`` (what ``/api/ps``
  lists), ``{"delay_s": s}`` (pause before each chunk), ``{"chunks": n}``,
  ``{"healthy": false}`` (every API route answers 503); names may be lists.
- ``GET /_stats``: ``{"requests": {model: n}, "routes": {path: n}, "active": n, ...}``.

Usage: python -m tests.support.ollama_fake --port P --models llama3.2:3b,qwen2:0.5b
       [--loaded llama3.2:3b] [--delay-s 0.01] [--chunks 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

VERSION = "0.5.7"
KEEP_ALIVE_S = 300.0  # Ollama's default keep_alive: 5m
FILLER = ("The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", ",",
          " naïve", " 世界", ".")


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _timestamp(at: float | None = None) -> str:
    """Go's RFC 3339 with nanoseconds, as Ollama prints times."""
    t = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"


@dataclass
class Model:
    name: str
    modified: float = field(default_factory=time.time)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def size(self) -> int:
        return 500_000_000 + int(self.digest[:6], 16) * 100

    def details(self) -> dict[str, Any]:
        base, _, tag = self.name.partition(":")
        family = re.match(r"[a-z]*", base.split("/")[-1])
        size = re.match(r"(\d+(?:\.\d+)?)b", tag)
        return {"parent_model": "", "format": "gguf", "family": family[0] if family else "",
                "families": [family[0]] if family else None,
                "parameter_size": f"{size[1]}B" if size else "7B",
                "quantization_level": "Q4_K_M"}

    def tag(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.name, "modified_at": _timestamp(self.modified),
                "size": self.size, "digest": self.digest, "details": self.details()}


@dataclass
class FakeState:
    models: dict[str, Model] = field(default_factory=dict)
    loaded: dict[str, float] = field(default_factory=dict)  # name -> expires (epoch s)
    delay_s: float = 0.01
    chunks: int = 5
    healthy: bool = True
    requests: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    active: int = 0

    def pull(self, name: str) -> None:
        self.models[name] = Model(name)

    def load(self, name: str) -> None:
        if name not in self.models:
            raise ApiError(400, f"model '{name}' not found")
        self.loaded[name] = time.time() + KEEP_ALIVE_S

    def resolve(self, name: object) -> str:
        """The installed model a request names (a bare name means ``:latest``)."""
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required")
        for candidate in (name, f"{name}:latest"):
            if candidate in self.models:
                return candidate
        raise ApiError(404, f"model '{name}' not found")

    def summary(self) -> dict[str, Any]:
        return {"models": sorted(self.models), "loaded": sorted(self.loaded),
                "delay_s": self.delay_s, "chunks": self.chunks, "healthy": self.healthy}


STATE = web.AppKey("state", FakeState)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- generation ----------------------------------------------------------------

@dataclass
class Plan:
    tokens: list[str]
    done_reason: str
    prompt_tokens: int
    started_ns: int = field(default_factory=time.monotonic_ns)

    def metrics(self) -> dict[str, int]:
        """The final object's statistics; Ollama omits the ones that are zero."""
        total = time.monotonic_ns() - self.started_ns
        stats = {"total_duration": total, "load_duration": 1_000_000,
                 "prompt_eval_count": self.prompt_tokens, "prompt_eval_duration": 2_000_000,
                 "eval_count": len(self.tokens), "eval_duration": max(total - 3_000_000, 0)}
        return {k: v for k, v in stats.items() if v}


def _plan(state: FakeState, options: Mapping[str, Any], prompt: Iterable[str]) -> Plan:
    limit: Any = options.get("num_predict")
    limited = isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
    count: int = limit if limited else state.chunks
    stops = options.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    prompt_tokens = sum(len(p.split()) for p in prompt) + 1
    tokens: list[str] = []
    for i in range(count):
        token = FILLER[i % len(FILLER)]
        if token.strip() in stops:
            return Plan(tokens, "stop", prompt_tokens)
        tokens.append(token)
    return Plan(tokens, "length" if limited else "stop", prompt_tokens)


async def _paced(state: FakeState, tokens: Iterable[str]) -> AsyncIterator[str]:
    for token in tokens:
        await asyncio.sleep(state.delay_s)
        yield token


def _texts(messages: object) -> list[str]:
    items = messages if isinstance(messages, list) else []
    return [m["content"] for m in items if isinstance(m, dict)
            and isinstance(m.get("content"), str)]


def _embedding(text: str, dims: int = 8) -> list[float]:
    raw = [b / 255 - 0.5 for b in hashlib.sha256(text.encode()).digest()[:dims]]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def _inputs(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, "invalid input type")


# -- HTTP plumbing ---------------------------------------------------------------

async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise ApiError(400, "missing request body")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    if not isinstance(doc, dict):
        raise ApiError(400, "request body must be a JSON object")
    return doc


def _model(request: web.Request, body: Mapping[str, Any]) -> str:
    state = request.app[STATE]
    name = state.resolve(body.get("model"))
    state.requests[name] += 1
    return name


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_dumps(doc),
                        content_type="application/json", charset="utf-8")


async def _ndjson(request: web.Request, lines: AsyncIterator[dict[str, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    async for doc in lines:
        await resp.write(_dumps(doc) + b"\n")
    await resp.write_eof()
    return resp


async def _sse(request: web.Request, events: AsyncIterator[dict[str, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    async for doc in events:
        await resp.write(b"data: " + _dumps(doc) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


@web.middleware
async def errors(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path.startswith("/_"):
        return await handler(request)
    state.routes[request.path] += 1
    state.active += 1
    try:
        if not state.healthy:
            raise ApiError(503, "server unavailable")
        return await handler(request)
    except ApiError as exc:
        if request.path.startswith("/v1/"):
            return _json(_openai_error(exc.status, exc.message), exc.status)
        return _json({"error": exc.message}, exc.status)
    finally:
        state.active -= 1


# -- native API ------------------------------------------------------------------

async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return _json({"version": VERSION})


async def tags(request: web.Request) -> web.Response:
    models = sorted(request.app[STATE].models.values(), key=lambda m: -m.modified)
    return _json({"models": [m.tag() for m in models]})


async def ps(request: web.Request) -> web.Response:
    state = request.app[STATE]
    out = []
    for name, expires in sorted(state.loaded.items(), key=lambda kv: -kv[1]):
        tag = state.models[name].tag()
        out.append({"name": name, "model": name, "size": tag["size"], "digest": tag["digest"],
                    "details": tag["details"], "expires_at": _timestamp(expires),
                    "size_vram": tag["size"], "context_length": 4096})
    return _json({"models": out})


def _load_or_unload(state: FakeState, model: str, body: Mapping[str, Any]) -> str:
    """An empty request loads the model, or with ``keep_alive: 0`` unloads it."""
    if body.get("keep_alive") in (0, "0", "0s", "0m"):
        state.loaded.pop(model, None)
        return "unload"
    state.load(model)
    return "load"


async def api_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await _body(request)
    model = _model(request, body)
    messages = body.get("messages") or []
    if not messages:  # an empty chat loads (or with keep_alive 0, unloads) the model
        reason = _load_or_unload(state, model, body)
        return _json({"model": body["model"], "created_at": _timestamp(),
                      "message": {"role": "assistant", "content": ""},
                      "done_reason": reason, "done": True})
    state.load(model)
    plan = _plan(state, body.get("options") or {}, _texts(messages))
    tools = body.get("tools") or []
    if tools:
        plan.tokens = []

    async def lines() -> AsyncIterator[dict[str, Any]]:
        head = {"model": body["model"]}
        async for token in _paced(state, plan.tokens):
            yield {**head, "created_at": _timestamp(),
                   "message": {"role": "assistant", "content": token}, "done": False}
        if tools:
            call = {"id": f"call_{random.randrange(16**8):08x}",
                    "function": {"index": 0, "name": tools[0]["function"]["name"],
                                 "arguments": {}}}
            yield {**head, "created_at": _timestamp(),
                   "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                   "done": False}
        yield {**head, "created_at": _timestamp(),
               "message": {"role": "assistant", "content": ""},
               "done_reason": plan.done_reason, "done": True, **plan.metrics()}

    if body.get("stream", True) is not False:
        return await _ndjson(request, lines())
    content = ""
    calls: list[Any] = []
    final: dict[str, Any] = {}
    async for line in lines():
        content += line["message"]["content"]
        calls += line["message"].get("tool_calls", [])
        final = line
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return _json({**final, "message": message})


async def api_generate(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await _body(request)
    model = _model(request, body)
    prompt = body.get("prompt") or ""
    if not prompt:
        reason = _load_or_unload(state, model, body)
        return _json({"model": body["model"], "created_at": _timestamp(), "response": "",
                      "done": True, "done_reason": reason})
    state.load(model)
    plan = _plan(state, body.get("options") or {}, [prompt])

    async def lines() -> AsyncIterator[dict[str, Any]]:
        async for token in _paced(state, plan.tokens):
            yield {"model": body["model"], "created_at": _timestamp(), "response": token,
                   "done": False}
        final = {"model": body["model"], "created_at": _timestamp(), "response": "",
                 "done": True, "done_reason": plan.done_reason}
        if not body.get("raw"):
            final["context"] = [1, 2, 3]
        yield {**final, **plan.metrics()}

    if body.get("stream", True) is not False:
        return await _ndjson(request, lines())
    text = ""
    final: dict[str, Any] = {}
    async for line in lines():
        text += line["response"]
        final = line
    return _json({**final, "response": text})


async def api_embed(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    texts = _inputs(body.get("input"))
    model = _model(request, body)
    state.load(model)
    started = time.monotonic_ns()
    return _json({"model": body["model"], "embeddings": [_embedding(t) for t in texts],
                  "total_duration": time.monotonic_ns() - started + 1, "load_duration": 1,
                  "prompt_eval_count": sum(len(t.split()) for t in texts)})


# -- OpenAI layer ----------------------------------------------------------------

def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    stop = body.get("stop")
    return {"num_predict": body.get("max_tokens"),
            "stop": [stop] if isinstance(stop, str) else stop or []}


def _usage(plan: Plan) -> dict[str, int]:
    n = len(plan.tokens)
    return {"prompt_tokens": plan.prompt_tokens, "completion_tokens": n,
            "total_tokens": plan.prompt_tokens + n}


def _include_usage(body: Mapping[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


async def v1_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await _body(request)
    if not body.get("messages"):
        raise ApiError(400, "[] is too short - 'messages'")
    model = _model(request, body)
    state.load(model)
    plan = _plan(state, _options(body), _texts(body["messages"]))
    head = {"id": f"chatcmpl-{random.randrange(999)}", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_ollama"}
    if body.get("stream") is True:
        async def events() -> AsyncIterator[dict[str, Any]]:
            chunk = {**head, "object": "chat.completion.chunk"}
            async for token in _paced(state, plan.tokens):
                yield {**chunk, "choices": [{"index": 0, "finish_reason": None, "delta": {
                    "role": "assistant", "content": token}}]}
            yield {**chunk, "choices": [{"index": 0, "finish_reason": plan.done_reason,
                                         "delta": {"role": "assistant", "content": ""}}]}
            if _include_usage(body):
                yield {**chunk, "choices": [], "usage": _usage(plan)}
        return await _sse(request, events())
    text = "".join([t async for t in _paced(state, plan.tokens)])
    return _json({**head, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": plan.done_reason}], "usage": _usage(plan)})


async def v1_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await _body(request)
    model = _model(request, body)
    state.load(model)
    prompt = body.get("prompt")
    plan = _plan(state, _options(body), [prompt] if isinstance(prompt, str) else [])
    head = {"id": f"cmpl-{random.randrange(999)}", "object": "text_completion",
            "created": int(time.time()), "model": body["model"],
            "system_fingerprint": "fp_ollama"}
    if body.get("stream") is True:
        async def events() -> AsyncIterator[dict[str, Any]]:
            async for token in _paced(state, plan.tokens):
                yield {**head, "choices": [{"text": token, "index": 0, "finish_reason": None}]}
            yield {**head, "choices": [{"text": "", "index": 0,
                                        "finish_reason": plan.done_reason}]}
            if _include_usage(body):
                yield {**head, "choices": [], "usage": _usage(plan)}
        return await _sse(request, events())
    text = "".join([t async for t in _paced(state, plan.tokens)])
    return _json({**head, "choices": [{"text": text, "index": 0,
                                       "finish_reason": plan.done_reason}],
                  "usage": _usage(plan)})


async def v1_embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    texts = _inputs(body.get("input"))
    if not texts:
        raise ApiError(400, "invalid input")
    model = _model(request, body)
    state.load(model)
    tokens = sum(len(t.split()) for t in texts)
    return _json({"object": "list", "model": body["model"],
                  "data": [{"object": "embedding", "embedding": _embedding(t), "index": i}
                           for i, t in enumerate(texts)],
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def v1_models(request: web.Request) -> web.Response:
    models = sorted(request.app[STATE].models.values(), key=lambda m: -m.modified)
    return _json({"object": "list", "data": [
        {"id": m.name, "object": "model", "created": int(m.modified), "owned_by": "library"}
        for m in models]})


# -- test controls -----------------------------------------------------------------

def _names(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    doc = await request.json()
    try:
        for name in _names(doc.get("pull")):
            state.pull(name)
        for name in _names(doc.get("delete")):
            state.models.pop(name, None)
            state.loaded.pop(name, None)
        for name in _names(doc.get("load")):
            state.load(name)
        for name in _names(doc.get("unload")):
            state.loaded.pop(name, None)
    except ApiError as exc:
        return _json({"error": exc.message}, exc.status)
    if "delay_s" in doc:
        state.delay_s = float(doc["delay_s"])
    if "chunks" in doc:
        state.chunks = int(doc["chunks"])
    if "healthy" in doc:
        state.healthy = bool(doc["healthy"])
    return _json(state.summary())


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json({"requests": dict(state.requests), "routes": dict(state.routes),
                  "active": state.active, **state.summary()})


def make_app(state: FakeState) -> web.Application:
    app = web.Application(middlewares=[errors])
    app[STATE] = state
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/chat", api_chat)
    app.router.add_post("/api/generate", api_generate)
    app.router.add_post("/api/embed", api_embed)
    app.router.add_post("/v1/chat/completions", v1_chat)
    app.router.add_post("/v1/completions", v1_completions)
    app.router.add_post("/v1/embeddings", v1_embeddings)
    app.router.add_get("/v1/models", v1_models)
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--models", default="llama3.2:3b", help="installed models, comma-separated")
    ap.add_argument("--loaded", default="", help="models in memory at start, comma-separated")
    ap.add_argument("--delay-s", type=float, default=0.01)
    ap.add_argument("--chunks", type=int, default=5)
    args = ap.parse_args()
    state = FakeState(delay_s=args.delay_s, chunks=args.chunks)
    for i, name in enumerate(n for n in args.models.split(",") if n):
        state.models[name] = Model(name, modified=time.time() - i)  # listed order = newest first
    for name in (n for n in args.loaded.split(",") if n):
        state.load(name)
    web.run_app(make_app(state), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
