"""The hub's errors in each client API's shape, as JSON answers and as stream events."""

from __future__ import annotations

import json

import pytest

from hub import error_shapes
from hub.auth.principal import MissingToken
from hub.errors import BodyTooLarge, ModelNotFound, NoWorker, UpstreamTimeout


@pytest.mark.parametrize("path, api", [
    ("/v1/chat/completions", "openai"), ("/v1/responses", "openai"),
    ("/v1/messages", "anthropic"), ("/v1/messages/count_tokens", "anthropic"),
    ("/v1/messagesx", "openai"), ("/api/chat", "ollama"), ("/api/tags", "ollama"),
    ("/tokenize", "openai"),
])
def test_api_for_path(path: str, api: str) -> None:
    assert error_shapes.api_for_path(path) == api


def test_anthropic_errors_keep_status_and_headers() -> None:
    resp = error_shapes.error_for("/v1/messages", MissingToken("Missing API key"))
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.body is not None
    assert json.loads(bytes(resp.body)) == {  # type: ignore[arg-type]
        "type": "error", "error": {"type": "authentication_error", "message": "Missing API key"}}


@pytest.mark.parametrize("error, kind", [
    (ModelNotFound("no such model"), "not_found_error"),
    (BodyTooLarge("too big"), "request_too_large"),
    (NoWorker("none"), "overloaded_error"),
    (UpstreamTimeout("slow"), "timeout_error"),
])
def test_anthropic_error_types_by_status(error: ModelNotFound, kind: str) -> None:
    body = error_shapes.shaped_body("anthropic", error.status, error.body())
    assert body["error"]["type"] == kind


def test_ollama_errors_are_a_string() -> None:
    resp = error_shapes.error_for("/api/chat", ModelNotFound("model 'x' not found"))
    assert resp.status == 404
    assert json.loads(bytes(resp.body)) == {"error": "model 'x' not found"}  # type: ignore[arg-type]


def test_openai_shape_is_unchanged() -> None:
    err = ModelNotFound("gone", param="model")
    resp = error_shapes.error_for("/v1/chat/completions", err)
    assert json.loads(bytes(resp.body)) == err.body()  # type: ignore[arg-type]


def test_stream_error_events() -> None:
    err = UpstreamTimeout("upstream timed out waiting for next chunk")
    assert error_shapes.stream_error("ollama", err) == (
        b'{"error":"upstream timed out waiting for next chunk"}\n')
    anthropic = error_shapes.stream_error("anthropic", err)
    assert anthropic.startswith(b"event: error\ndata: {") and anthropic.endswith(b"}\n\n")
    responses = error_shapes.stream_error("responses", err)
    assert json.loads(responses.split(b"data: ")[1])["code"] == "upstream_timeout"
    openai = error_shapes.stream_error("openai", err)
    assert openai.endswith(b"\n\ndata: [DONE]\n\n")
