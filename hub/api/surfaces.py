"""How each API family's requests are read: the credentials, the body and what routing
needs from it (model, stream), the caps, and how the body is rewritten for an alias or
a clamp. ``routes._inference`` runs the same path for every family (auth, admission,
the proxy, metrics and the request log) with one of these:

- :data:`OPENAI`: chat, completions, embeddings (unchanged: ``Authorization``, JSON
  bodies checked by ``body.parse_payload``);
- :data:`RESPONSES`, :data:`RERANK`, :data:`TOKENIZE`: the other JSON routes the hub
  forwards to OpenAI-compatible and llama.cpp workers; ``/tokenize`` and
  ``/detokenize`` take an optional ``model`` (llama.cpp's API has none): without it the
  request goes to the one model the fleet serves on that route, and is refused (400)
  when there are several;
- :data:`ANTHROPIC`: Messages; the key may come as ``x-api-key`` (what Anthropic's
  clients send) or as ``Authorization: Bearer``;
- :data:`OLLAMA`: Ollama's API; ``stream`` defaults to true, as in Ollama;
- :data:`UPLOAD`: multipart uploads (audio transcriptions): ``model`` is read from the
  form, and the body is buffered up to ``limits.max_upload_bytes`` (the hub's upstream
  client sends byte bodies).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from hub.admission.caps import Caps
from hub.admission.route_caps import check_route_caps, route_requested_tokens
from hub.api.body import parse_payload, with_model
from hub.config.schema import Limits
from hub.errors import BadRequest, InvalidJSON, MissingField
from hub.fleet.registry import Registry

_BOUNDARY_RE = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_NAME_RE = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME_RE = re.compile(rb';\s*filename\*?=', re.IGNORECASE)


class Surface:
    """The OpenAI routes: chat, completions and embeddings. ``streaming`` False: the
    route answers whole whatever the body asks (embeddings have no stream; a worker
    that ignores ``"stream": true`` answers JSON, which is no event stream)."""

    def __init__(self, *, streaming: bool = True) -> None:
        self.streaming = streaming

    def credentials(self, request: web.Request) -> str | None:
        return request.headers.get("Authorization")

    def max_body(self, limits: Limits) -> int:
        return limits.max_body_bytes

    def parse(self, route: str, body: bytes, request: web.Request,
              registry: Registry) -> dict[str, Any]:
        """The parsed body, with a non-empty string ``model``; 400 if malformed."""
        return parse_payload(route, body)

    def streams(self, payload: dict[str, Any]) -> bool:
        return self.streaming and payload.get("stream") is True

    def caps(self, route: str, payload: dict[str, Any], caps: Caps) -> dict[str, Any] | None:
        return check_route_caps(route, payload, caps)

    def requested_tokens(self, route: str, payload: dict[str, Any]) -> int:
        return route_requested_tokens(route, payload)

    def encode(self, payload: dict[str, Any], model: str, body: bytes) -> bytes:
        """The body for the worker, re-encoded with ``model`` (an alias's target)."""
        return with_model(payload, model)

    def content_type(self, request: web.Request) -> str:
        return "application/json"


def _object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidJSON("Request body is empty; expected a JSON object")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJSON("Request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidJSON("Request body must be a JSON object")
    return payload


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model is None:
        raise MissingField("Missing required parameter: 'model'", param="model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string", param="model")
    return model


Required = dict[str, tuple[tuple[type, ...], str]]
_MAY_BE_EMPTY = frozenset({"content", "tokens"})  # tokenize "", detokenize []


def _require(payload: dict[str, Any], field: str, types: tuple[type, ...], what: str) -> None:
    value = payload.get(field)
    if value is None:
        raise MissingField(f"Missing required parameter: '{field}'", param=field)
    if not isinstance(value, types) or (not value and field not in _MAY_BE_EMPTY):
        raise BadRequest(f"'{field}' must be {what}"
                         f"{'' if field in _MAY_BE_EMPTY else ' (non-empty)'}", param=field)


def _optional(payload: dict[str, Any], field: str, types: tuple[type, ...], what: str) -> None:
    value = payload.get(field)
    if value is not None and not isinstance(value, types):
        raise BadRequest(f"'{field}' must be {what}", param=field)


def _stream_flag(payload: dict[str, Any]) -> None:
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")


class JsonSurface(Surface):
    """A JSON route whose body must carry ``model`` and, if named, one more field."""

    def __init__(self, required: Required | None = None, optional: Required | None = None,
                 *, streaming: bool = True) -> None:
        super().__init__(streaming=streaming)
        self.required = required or {}
        self.optional = optional or {}

    def parse(self, route: str, body: bytes, request: web.Request,
              registry: Registry) -> dict[str, Any]:
        payload = _object(body)
        _model(payload)
        for field, (types, what) in self.required.items():
            _require(payload, field, types, what)
        for field, (types, what) in self.optional.items():
            _optional(payload, field, types, what)
        _stream_flag(payload)
        return payload


class AnthropicSurface(JsonSurface):
    def credentials(self, request: web.Request) -> str | None:
        authorization = request.headers.get("Authorization")
        key = request.headers.get("x-api-key")
        if authorization is None and key is not None:
            return f"Bearer {key}"
        return authorization


class TokenizeSurface(JsonSurface):
    """``/tokenize`` and ``/detokenize``: ``model`` is optional (see the module doc)."""

    def parse(self, route: str, body: bytes, request: web.Request,
              registry: Registry) -> dict[str, Any]:
        payload = _object(body)
        if payload.get("model") is None:
            models = sorted({m for w in registry if w.spec.serves_route(route)
                             for m in w.models})
            if len(models) != 1:
                raise MissingField(f"Missing parameter 'model': the hub serves "
                                   f"{len(models)} models on this route; name one",
                                   param="model")
            payload["model"] = models[0]
        _model(payload)
        for field, (types, what) in self.required.items():
            _require(payload, field, types, what)
        return payload


class OllamaSurface(JsonSurface):
    """Ollama's API: ``stream`` is true unless the body says false. A chat without
    messages or a generation without a prompt only loads the model, as in Ollama."""

    def streams(self, payload: dict[str, Any]) -> bool:
        return self.streaming and payload.get("stream") is not False


class UploadSurface(Surface):
    """A multipart form upload; its ``model`` field routes it."""

    def max_body(self, limits: Limits) -> int:
        return limits.max_upload_bytes

    def parse(self, route: str, body: bytes, request: web.Request,
              registry: Registry) -> dict[str, Any]:
        if request.content_type != "multipart/form-data":
            raise BadRequest("This endpoint takes a multipart/form-data upload")
        fields = form_fields(body, _boundary(request))
        where = fields.get("model")
        if where is None:
            raise MissingField("Missing required form field: 'model'", param="model")
        try:
            model = body[where[0]:where[1]].decode()
        except UnicodeDecodeError:
            raise BadRequest("'model' must be text", param="model") from None
        if not model:
            raise BadRequest("'model' must be a non-empty string", param="model")
        return {"model": model, "_model_at": where}

    def streams(self, payload: dict[str, Any]) -> bool:
        return False  # the answer is relayed whole, whatever the form asks

    def caps(self, route: str, payload: dict[str, Any], caps: Caps) -> dict[str, Any] | None:
        return None

    def requested_tokens(self, route: str, payload: dict[str, Any]) -> int:
        return 0

    def encode(self, payload: dict[str, Any], model: str, body: bytes) -> bytes:
        start, end = payload["_model_at"]
        return body[:start] + model.encode() + body[end:]

    def content_type(self, request: web.Request) -> str:
        return request.headers.get("Content-Type", "multipart/form-data")


def _boundary(request: web.Request) -> bytes:
    m = _BOUNDARY_RE.search(request.headers.get("Content-Type", ""))
    if m is None:
        raise BadRequest("multipart/form-data without a boundary")
    return m.group(1).encode("latin-1")


def form_fields(body: bytes, boundary: bytes) -> dict[str, tuple[int, int]]:
    """The text fields of a multipart/form-data body: name -> (start, end) of the value
    in ``body`` (files are skipped). 400 if the body is not well formed."""
    delimiter = b"--" + boundary
    fields: dict[str, tuple[int, int]] = {}
    pos = body.find(delimiter)
    if pos < 0:
        raise BadRequest("Malformed multipart body: no boundary")
    while True:
        pos += len(delimiter)
        if body.startswith(b"--", pos):
            return fields  # the closing delimiter
        head = body.find(b"\r\n", pos)
        head_end = body.find(b"\r\n\r\n", head) if head >= 0 else -1
        if head_end < 0:
            raise BadRequest("Malformed multipart body: a part without headers")
        value = head_end + 4
        nxt = body.find(b"\r\n" + delimiter, value)
        if nxt < 0:
            raise BadRequest("Malformed multipart body: a part without an end")
        disposition = b""
        for line in body[head + 2:head_end].split(b"\r\n"):
            name, _, rest = line.partition(b":")
            if name.strip().lower() == b"content-disposition":
                disposition = rest
        m = _NAME_RE.search(disposition)
        if m is not None and not _FILENAME_RE.search(disposition):
            fields.setdefault(m.group(1).decode("latin-1"), (value, nxt))
        pos = nxt + 2


_TEXT = ((str,), "a string")
_LIST = ((list,), "an array")
_OBJECT = ((dict,), "an object")
OPENAI = Surface()
OPENAI_EMBEDDINGS = Surface(streaming=False)
RESPONSES = JsonSurface()  # ``input`` is optional in the API (a stored prompt may stand)
RERANK = JsonSurface({"query": _TEXT, "documents": _LIST}, streaming=False)
TOKENIZE = TokenizeSurface({"content": ((str, list), "a string or an array")},
                           streaming=False)
DETOKENIZE = TokenizeSurface({"tokens": ((list,), "an array of token ids")}, streaming=False)
ANTHROPIC = AnthropicSurface({"messages": _LIST})
ANTHROPIC_COUNT = AnthropicSurface({"messages": _LIST}, streaming=False)
OLLAMA_CHAT = OllamaSurface(optional={"messages": _LIST, "options": _OBJECT})
OLLAMA_GENERATE = OllamaSurface(optional={"prompt": _TEXT, "system": _TEXT,
                                          "options": _OBJECT})
OLLAMA_EMBED = OllamaSurface({"input": ((str, list), "a string or an array of strings")},
                             streaming=False)
OLLAMA_EMBEDDINGS = OllamaSurface({"prompt": _TEXT}, streaming=False)
UPLOAD = UploadSurface()
