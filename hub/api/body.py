"""Read and check a request body once; peek at what routing needs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from hub.errors import (
    BadRequest,
    BodyTimeout,
    BodyTooLarge,
    Forbidden,
    HubError,
    InvalidJSON,
    MissingField,
)

# What each route needs besides "model", and what type it must be.
REQUIRED: dict[str, tuple[str, tuple[type, ...], str]] = {
    "/chat/completions": ("messages", (list,), "an array of messages"),
    "/completions": ("prompt", (str, list), "a string or an array"),
    "/embeddings": ("input", (str, list), "a string or an array"),
}


BODY_TIMEOUT_S = 30.0  # the whole body must arrive by then: a client trickling its body
                      # would otherwise hold a connection and a handler indefinitely


class UnsupportedMediaType(HubError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


def require_json(request: web.Request) -> None:
    """A state-changing route (heartbeat, drain, reload) takes only JSON: 415 otherwise.

    A page on another site can make a browser POST here (a form, or fetch in no-cors
    mode), but only as form data, multipart or text/plain, or with no body and no
    Content-Type; asking for application/json needs a CORS preflight, which this hub
    never grants. So with auth off no web page can drain workers or register one.
    Browsers put ``Origin`` on every POST, so a POST without a body and without
    ``Origin`` is no browser's (``curl -X POST``, or aiohttp, which labels the
    missing body application/octet-stream) and is let through. Browsers that say
    where a request comes from (``Sec-Fetch-Site``) are refused for anything but a
    same-origin page (the status page) or a typed-in request.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden(f"Cross-site requests may not change this hub's state "
                        f"(Sec-Fetch-Site: {site[:40]})")
    if request.content_type == "application/json":
        return
    if (request.content_type == "application/octet-stream"  # what aiohttp says for none
            and "Origin" not in request.headers and not request.body_exists):
        return
    sent = request.headers.get("Content-Type")
    raise UnsupportedMediaType(
        f"This endpoint takes Content-Type: application/json"
        f"{'' if sent is None else ', not ' + repr(sent[:100])}")


async def read_body(request: web.Request, max_bytes: int,
                    timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(f"Request body is {length} bytes; the limit is {max_bytes}")
    content = request.content
    if content.is_eof():  # the usual case: the body came with the head, no timer needed
        body = content.read_nowait()
        if len(body) > max_bytes:
            raise BodyTooLarge(f"Request body exceeds the limit of {max_bytes} bytes")
        return body
    # also for chunked uploads: stop reading as soon as the body passes the cap
    parts: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await content.readany():
                total += len(chunk)
                if total > max_bytes:
                    raise BodyTooLarge(f"Request body exceeds the limit of {max_bytes} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"Request body not received within {timeout_s:g} s") from None
    return b"".join(parts)


def parse_payload(route: str, body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidJSON("Request body is empty; expected a JSON object")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJSON("Request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidJSON("Request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        raise MissingField("Missing required parameter: 'model'", param="model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string", param="model")
    field, types, what = REQUIRED[route]
    value = payload.get(field)
    if value is None:
        raise MissingField(f"Missing required parameter: '{field}'", param=field)
    if not isinstance(value, types) or (isinstance(value, list) and not value):
        raise BadRequest(f"'{field}' must be {what} (non-empty)", param=field)
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    return payload


def with_model(payload: dict[str, Any], model: str) -> bytes:
    """Re-serialise only when the model name must change (alias resolution)."""
    payload = dict(payload)
    payload["model"] = model
    return json.dumps(payload, separators=(",", ":")).encode()
