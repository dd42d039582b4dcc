"""How each API family's requests are read: credentials, model, stream, uploads."""

from __future__ import annotations

import pytest
from aiohttp import FormData
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from hub.api import surfaces
from hub.api.surfaces import form_fields
from hub.config.workers import WorkerSpec
from hub.errors import BadRequest, HubError, MissingField
from hub.fleet.registry import ProbeResult, Registry

REQ = make_mocked_request("POST", "/")


def _registry(*models: str) -> Registry:
    reg = Registry([WorkerSpec(f"w{i}", f"http://w{i}") for i in range(len(models))])
    for w, m in zip(reg, models, strict=True):
        reg.apply_probe(w, ProbeResult(healthy=True, models=frozenset({m})))
    return reg


def test_anthropic_takes_x_api_key_or_bearer() -> None:
    get = surfaces.ANTHROPIC.credentials
    key = make_mocked_request("POST", "/v1/messages", headers={"x-api-key": "abc"})
    assert get(key) == "Bearer abc"
    both = make_mocked_request("POST", "/v1/messages",
                               headers={"x-api-key": "abc", "Authorization": "Bearer def"})
    assert get(both) == "Bearer def"
    assert surfaces.OPENAI.credentials(key) is None  # OpenAI routes: Authorization only


def test_tokenize_model_is_optional_when_the_fleet_serves_one() -> None:
    one = surfaces.TOKENIZE.parse("/tokenize", b'{"content": "hi"}', REQ, _registry("tiny"))
    assert one["model"] == "tiny"
    with pytest.raises(MissingField, match="serves 2 models"):
        surfaces.TOKENIZE.parse("/tokenize", b'{"content": "hi"}', REQ, _registry("a", "b"))
    named = surfaces.TOKENIZE.parse("/tokenize", b'{"model": "b", "content": ""}', REQ,
                                    _registry("a", "b"))
    assert named["model"] == "b"
    assert surfaces.DETOKENIZE.parse("/detokenize", b'{"tokens": []}', REQ,
                                     _registry("a"))["tokens"] == []
    with pytest.raises(BadRequest):
        surfaces.DETOKENIZE.parse("/detokenize", b'{"tokens": "1 2"}', REQ, _registry("a"))


@pytest.mark.parametrize("surface, route, body, streams", [
    (surfaces.OLLAMA_CHAT, "/api/chat", b'{"model": "m"}', True),
    (surfaces.OLLAMA_CHAT, "/api/chat", b'{"model": "m", "stream": false}', False),
    (surfaces.OLLAMA_EMBED, "/api/embed", b'{"model": "m", "input": "x"}', False),
    (surfaces.RESPONSES, "/responses", b'{"model": "m"}', False),
    (surfaces.RESPONSES, "/responses", b'{"model": "m", "stream": true}', True),
    (surfaces.RERANK, "/rerank",
     b'{"model": "m", "query": "q", "documents": ["d"], "stream": true}', False),
    (surfaces.OPENAI_EMBEDDINGS, "/embeddings", b'{"model": "m", "input": "x", "stream": true}',
     False),
    (surfaces.OPENAI, "/completions", b'{"model": "m", "prompt": "x", "stream": true}', True),
    (surfaces.ANTHROPIC_COUNT, "/messages/count_tokens",
     b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}', False),
])
def test_stream_defaults(surface: surfaces.Surface, route: str, body: bytes,
                         streams: bool) -> None:
    assert surface.streams(surface.parse(route, body, REQ, _registry("m"))) is streams


@pytest.mark.parametrize("surface, body", [
    (surfaces.ANTHROPIC, b'{"model": "m"}'),
    (surfaces.ANTHROPIC, b'{"model": "m", "messages": []}'),
    (surfaces.RERANK, b'{"model": "m", "query": "q"}'),
    (surfaces.OLLAMA_CHAT, b'{"model": "m", "messages": "hi"}'),
    (surfaces.OLLAMA_EMBED, b'{"model": "m"}'),
    (surfaces.RESPONSES, b'{"input": "x"}'),
    (surfaces.RESPONSES, b'[]'),
])
def test_malformed_bodies_are_400(surface: surfaces.Surface, body: bytes) -> None:
    with pytest.raises(HubError) as err:
        surface.parse("/x", body, REQ, _registry("m"))
    assert err.value.status == 400


async def _form(**fields: str) -> tuple[bytes, str]:
    form = FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", b"RIFF\r\n--not-a-boundary\r\nname=\"model\"", filename="a.wav",
                   content_type="audio/wav")
    payload = form()
    body = bytearray()

    class _Writer:
        async def write(self, data: bytes) -> None:
            body.extend(data)

    await payload.write(_Writer())  # type: ignore[arg-type]
    return bytes(body), payload.content_type


async def test_upload_model_comes_from_the_form_and_can_be_rewritten() -> None:
    body, content_type = await _form(model="whisper", language="en")
    request = make_mocked_request("POST", "/v1/audio/transcriptions",
                                  headers=CIMultiDict({"Content-Type": content_type}))
    payload = surfaces.UPLOAD.parse("/audio/transcriptions", body, request, _registry("m"))
    assert payload["model"] == "whisper"
    rewritten = surfaces.UPLOAD.encode(payload, "large-v3", body)
    boundary = content_type.split("boundary=")[1].strip('"').encode()
    fields = form_fields(rewritten, boundary)
    start, end = fields["model"]
    assert rewritten[start:end] == b"large-v3"
    assert set(fields) == {"model", "language"}  # the file is no text field
    assert rewritten.replace(b"large-v3", b"whisper") == body
    assert surfaces.UPLOAD.content_type(request) == content_type


@pytest.mark.parametrize("body", [b"", b"--B\r\n", b"--B\r\nContent-Disposition: form-data"])
def test_malformed_uploads_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        form_fields(body, b"B")


async def test_upload_without_model_is_400() -> None:
    body, content_type = await _form(language="en")
    request = make_mocked_request("POST", "/", headers=CIMultiDict({"Content-Type": content_type}))
    with pytest.raises(MissingField):
        surfaces.UPLOAD.parse("/audio/transcriptions", body, request, _registry("m"))
    json_request = make_mocked_request("POST", "/", headers={"Content-Type": "application/json"})
    with pytest.raises(BadRequest):
        surfaces.UPLOAD.parse("/audio/transcriptions", b"{}", json_request, _registry("m"))
