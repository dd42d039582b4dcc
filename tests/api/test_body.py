from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub.api.body import parse_payload, read_body, with_model
from hub.errors import BadRequest, HubError, InvalidJSON, MissingField


def test_valid_chat_payload() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "stream": True, "tools": [], "n": 2}).encode()
    payload = parse_payload("/chat/completions", body)
    assert payload["model"] == "m" and payload["n"] == 2


@pytest.mark.parametrize("body", [b"", b"{", b"null", b"[]", b'"s"', b"\xff", b"[" * 100000])
def test_not_an_object(body: bytes) -> None:
    with pytest.raises(InvalidJSON):
        parse_payload("/chat/completions", body)


def test_missing_and_wrong_types() -> None:
    with pytest.raises(MissingField):
        parse_payload("/embeddings", b'{"model": "m"}')
    with pytest.raises(BadRequest):
        parse_payload("/completions", b'{"model": "m", "prompt": 3}')
    with pytest.raises(BadRequest):
        parse_payload("/chat/completions", b'{"model": "", "messages": [1]}')


def test_with_model_rewrites_only_model() -> None:
    payload = {"model": "alias", "messages": [{"role": "user", "content": "é"}], "stop": ["x"]}
    out = json.loads(with_model(payload, "real"))
    assert out == {**payload, "model": "real"}
    assert payload["model"] == "alias"


async def test_slow_body_times_out_with_408() -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, 1 << 20, timeout_s=0.3)
        except HubError as exc:
            return exc.response()
        return web.Response(body=body)

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head[:60]
        assert b"request_timeout" in head
        # and a body that arrives whole is read at once
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"{}")
