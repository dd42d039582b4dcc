"""One error tree for the hub, rendered to OpenAI's error JSON in one place (api/middleware)."""

from __future__ import annotations

import json
from typing import ClassVar

from aiohttp import web


class HubError(Exception):
    """Base of every error the hub answers a client with."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return error_response(self.status, self.body(), self.headers)


def error_response(status: int, body: dict[str, object],
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json", headers=headers)


class BadRequest(HubError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class MissingField(BadRequest):
    code = "missing_required_parameter"


class BodyTooLarge(HubError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class BodyTimeout(HubError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class NotFound(HubError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class RouteNotServed(NotFound):
    """The model is served, but by no worker that takes this route (e.g. /v1/messages
    for a model only Ollama workers serve)."""

    code = "model_not_supported_on_route"


class MethodNotAllowed(HubError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class AuthError(HubError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(HubError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class AdmissionRejected(HubError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NoWorker(HubError):
    status = 503
    type = "server_error"
    code = "no_healthy_worker"


class ShuttingDown(HubError):
    status = 503
    type = "server_error"
    code = "hub_shutting_down"


class UpstreamError(HubError):
    """A worker failed (connection refused, 5xx, broken stream)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamAnswerTooLarge(HubError):
    """A worker's answer is over ``limits.max_upstream_body_bytes``. Not an UpstreamError:
    the worker is fine and another would answer as much, so it is never failed over."""

    status = 502
    type = "server_error"
    code = "upstream_answer_too_large"


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
