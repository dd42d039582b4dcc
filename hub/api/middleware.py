"""Render every error as OpenAI's error JSON (Anthropic's on /v1/messages*, Ollama's on
/api/*: ``hub.error_shapes``); never leak a traceback."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from hub.error_shapes import error_for, shaped_response
from hub.errors import HubError

log = logging.getLogger("spokehub.api")

_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}


def _http_error(path: str, exc: web.HTTPException) -> web.Response:
    status = exc.status
    type_ = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    message = exc.text if exc.text and exc.status != 404 else exc.reason
    if status == 404:
        message = "Not found: no such route"
    body: dict[str, object] = {"error": {"message": message, "type": type_, "param": None,
                                         "code": exc.reason.lower().replace(" ", "_")}}
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return shaped_response(path, status, body, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HubError as exc:
        return error_for(request.path, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request.path, exc)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_for(request.path, HubError("The hub hit an internal error"))
