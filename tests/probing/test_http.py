"""fetch: headers and body sent, answers capped whole, errors described briefly."""

from __future__ import annotations

import json
import socket

import pytest
from aiohttp import web

from hub.probing.http import AnswerTooLarge, describe_error, fetch, parse_json
from hub.upstream import Pool, UpstreamConnectFailed, UpstreamProtocolError
from tests.probing.fakes import Server, fake_llamacpp, padded

TIMEOUT = 5.0
CAP = 64 * 1024


async def test_sends_headers_and_body(pool: Pool) -> None:
    seen: dict[str, str] = {}

    async def echo(request: web.Request) -> web.Response:
        seen["ua"] = request.headers.get("User-Agent", "")
        seen["body"] = await request.text()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/echo", echo)
    server = Server(app)
    await server.start()
    try:
        status, body = await fetch(pool, "POST", f"{server.url}/echo", timeout_s=TIMEOUT,
                                   headers={"User-Agent": "probe/1"}, body=b'{"a": 1}')
    finally:
        await server.stop()
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert seen == {"ua": "probe/1", "body": '{"a": 1}'}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_answer_over_the_cap_is_refused_whole(pool: Pool, chunked: bool) -> None:
    server = Server(fake_llamacpp(sizes={"/props": CAP + 1, "/slots": CAP}, chunked=chunked))
    await server.start()
    try:
        with pytest.raises(AnswerTooLarge) as err:
            await fetch(pool, "GET", f"{server.url}/props", timeout_s=TIMEOUT, max_bytes=CAP)
        status, body = await fetch(pool, "GET", f"{server.url}/slots", timeout_s=TIMEOUT,
                                   max_bytes=CAP)
    finally:
        await server.stop()
    assert str(err.value) == "answer over 65536 bytes"
    assert describe_error(err.value) == "answer over 65536 bytes"
    assert status == 200 and len(body) == CAP  # exactly at the cap is fine


async def test_a_refused_answer_does_not_leave_its_rest_on_a_pooled_connection(
        pool: Pool) -> None:
    server = Server(fake_llamacpp(sizes={"/props": 4 * CAP}, chunked=True))
    await server.start()
    try:
        await fetch(pool, "GET", f"{server.url}/health", timeout_s=TIMEOUT)
        with pytest.raises(AnswerTooLarge):
            await fetch(pool, "GET", f"{server.url}/props", timeout_s=TIMEOUT, max_bytes=CAP)
        status, body = await fetch(pool, "GET", f"{server.url}/health", timeout_s=TIMEOUT)
    finally:
        await server.stop()
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_padded_answers_are_valid_json() -> None:
    """What makes the cap tests meaningful: a cut-off answer would still parse."""
    doc = {"total_slots": 4}
    assert parse_json(padded(doc, CAP + 1)) == doc
    assert parse_json(padded(doc, CAP + 1)[:CAP]) == doc


def test_parse_json() -> None:
    assert parse_json(b"") is None
    assert parse_json(b"<html>") is None
    assert parse_json(b"\xff\xfe") is None
    assert parse_json(b"[" * 100_000) is None  # too deep: not JSON to us
    assert parse_json(b'{"a": [1]}') == {"a": [1]}


def test_describe_error() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert describe_error(TimeoutError()) == "timed out"
    assert describe_error(UpstreamConnectFailed("x", refused)) == \
        "cannot connect: Connection refused"
    assert describe_error(UpstreamConnectFailed("connect timed out")) == "timed out"
    both = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
                   "[Errno 111] Connect call failed ('127.0.0.1', 1)")
    assert describe_error(UpstreamConnectFailed("x", both)) == \
        "cannot connect: Connection refused"
    dns = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert describe_error(UpstreamConnectFailed("x", dns)) == \
        "cannot connect: Name or service not known"
    assert describe_error(UpstreamProtocolError("bad")) == "UpstreamProtocolError"
    assert describe_error(AnswerTooLarge(4 * 1024 * 1024)) == "answer over 4 MiB"
