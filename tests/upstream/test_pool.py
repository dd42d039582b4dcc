"""The upstream pool against small real TCP servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hub.upstream import (
    Pool,
    UpstreamBodyError,
    UpstreamConnectFailed,
    UpstreamProtocolError,
)
from hub.upstream.url import split_url
from tests.support.procs import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)  # closed below even if the handler never does
            await handler(reader, writer)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/x"

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()
    for writer in writers:  # a closed server leaves its accepted connections open
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


async def test_keep_alive_reuse_and_stale_connection_retry(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):  # answer two requests, then close the idle connection
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(OK)
            await writer.drain()
        writer.close()

    url = await serve(handler)
    pool = Pool()
    for _ in range(5):
        resp = await pool.request("POST", url, {}, b"{}", 1.0)
        assert resp.status == 200 and resp.header("content-type") == "application/json"
        assert await resp.read() == b"{}"
        resp.release()
        await asyncio.sleep(0.01)
    assert connections == 3  # reused, and a closed idle connection was replaced silently
    pool.close()


async def test_connect_refused() -> None:
    with pytest.raises(UpstreamConnectFailed) as err:
        await Pool().request("POST", f"http://127.0.0.1:{free_port()}/x", {}, b"", 1.0)
    assert err.value.os_error is not None


async def test_body_cut_short_and_garbage(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()

    pool = Pool()
    resp = await pool.request("POST", await serve(short), {}, b"", 1.0)
    assert await resp.readany() == b"partial"
    with pytest.raises(UpstreamBodyError):
        await resp.readany()
    resp.close()
    with pytest.raises(UpstreamProtocolError):
        await pool.request("POST", await serve(garbage), {}, b"", 1.0)
    pool.close()


async def test_stream_backpressure_and_until_close(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    total = 4 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        block = b"data: " + b"y" * 1018 + b"\n\n"
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        writer.close()

    pool = Pool()
    resp = await pool.request("POST", await serve(big), {}, b"", 1.0)
    got = 0
    peak = 0
    while chunk := await resp.readany():
        got += len(chunk)
        peak = max(peak, len(chunk))
        await asyncio.sleep(0.001)  # a slow client
    assert got == (total // 1026) * 1026
    assert peak < 1024 * 1024  # reading paused instead of buffering the whole body
    assert resp.is_eof()
    resp.close()
    pool.close()


def test_host_header_for_ipv6_and_default_ports() -> None:
    assert split_url("http://[::1]/v1/x").authority == "[::1]"
    assert split_url("http://[::1]:8080/v1/x").authority == "[::1]:8080"
    target = split_url("https://api.example.com/v1/chat?x=1")
    assert (target.request_target, target.authority) == ("/v1/chat?x=1", "api.example.com")
    assert split_url("http://10.0.0.5:11434/api").authority == "10.0.0.5:11434"


async def _half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    await writer.drain()
    await reader.read()  # until the client closes
    writer.close()


async def test_close_also_ends_connections_still_carrying_a_response(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    pool = Pool()
    resp = await pool.request("POST", await serve(_half_answer), {}, b"", 1.0)
    pool.close()
    with pytest.raises(UpstreamBodyError):
        await resp.read()
    resp.release()
    assert pool.idle_count() == 0 and not pool._live


async def test_a_dropped_response_closes_its_connection_with_a_warning(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    pool = Pool()
    resp = await pool.request("POST", await serve(_half_answer), {}, b"", 1.0)
    conn = resp._conn
    with pytest.warns(ResourceWarning, match="neither released nor closed"):
        del resp
    assert not conn.open
    pool.close()
