"""The hub's errors in each client API's own shape.

Every :class:`~hub.errors.HubError` renders to OpenAI's ``{"error": {"message", "type",
"param", "code"}}``; a client of another API gets the same error in its API's shape,
with the same status and headers:

- Anthropic Messages (``/v1/messages``, ``/v1/messages/count_tokens``):
  ``{"type": "error", "error": {"type", "message"}}``, the type from the status as
  Anthropic's API names it (``invalid_request_error``, ``authentication_error``,
  ``permission_error``, ``not_found_error``, ``request_too_large``, ``rate_limit_error``,
  ``api_error``, ``overloaded_error``, ``timeout_error``);
- Ollama's API (``/api/...``): ``{"error": "message"}``.

A stream that breaks after its first byte ends with one error event in its API's shape
(:func:`stream_error`): OpenAI's chat and completions a ``data:`` error and
``data: [DONE]``; the Responses API an ``event: error`` event (``{"type": "error",
"code", "message", "param"}``: its ``response.failed`` would have to repeat the id of a
response the hub relays as bytes and never parses); Anthropic's ``event: error``; and
Ollama's NDJSON an ``{"error": ...}`` line.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from hub.errors import HubError, error_response

OPENAI = "openai"
ANTHROPIC = "anthropic"
OLLAMA = "ollama"
RESPONSES = "responses"  # OpenAI's Responses API: OpenAI's JSON, its own stream events

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error",
                    405: "invalid_request_error", 408: "timeout_error",
                    413: "request_too_large", 415: "invalid_request_error",
                    429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


def api_for_path(path: str) -> str:
    """Which API a request path belongs to, for the shape of the hub's own errors."""
    if path.startswith("/api/"):
        return OLLAMA
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    return OPENAI


def _message(body: dict[str, Any]) -> str:
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("message", ""))
    return str(err or "")


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else
                                "invalid_request_error")


def shaped_body(api: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """``body``, an OpenAI error JSON, as ``api`` shapes it."""
    if api == ANTHROPIC:
        return {"type": "error", "error": {"type": anthropic_type(status),
                                           "message": _message(body)}}
    if api == OLLAMA:
        return {"error": _message(body)}
    return body


def shaped_response(path: str, status: int, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> web.Response:
    """The error answer for a request on ``path``."""
    return error_response(status, shaped_body(api_for_path(path), status, body), headers)


def error_for(path: str, error: HubError) -> web.Response:
    return shaped_response(path, error.status, error.body(), error.headers)


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def stream_error(api: str, error: HubError) -> bytes:
    """The bytes that end a broken stream of ``api`` (see the module docstring)."""
    if api == ANTHROPIC:
        return b"event: error\ndata: " + _dumps(shaped_body(ANTHROPIC, error.status,
                                                            error.body())) + b"\n\n"
    if api == RESPONSES:
        return b"event: error\ndata: " + _dumps({"type": "error", "code": error.code,
                                                "message": error.message,
                                                "param": error.param}) + b"\n\n"
    if api == OLLAMA:
        return _dumps({"error": error.message}) + b"\n"
    return b"data: " + json.dumps(error.body()).encode() + b"\n\ndata: [DONE]\n\n"
