"""Keep-alive over TLS: the peek before reuse must not mistake TLS records for a close."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from hub.upstream import Pool
from tests.upstream.fakes import OK


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


async def test_tls_connections_are_reused_and_idle_closes_are_seen(
        tls_files: tuple[Path, Path]) -> None:
    key, cert = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    answered: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(OK)
                await writer.drain()
                answered.append(len(writers))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    pool = Pool(ssl_context=client_ctx)
    url = f"https://127.0.0.1:{port}/v1/x"
    for _ in range(3):
        resp = await pool.request("POST", url, {}, b"{}", 5.0)
        assert await resp.read() == b"{}"
        resp.release()
    assert (pool.stats.opened, pool.stats.reused, pool.stats.stale) == (1, 2, 0)
    writers[0].close()  # the worker drops the idle connection
    await writers[0].wait_closed()
    resp = await pool.request("POST", url, {}, b"{}", 5.0)
    assert await resp.read() == b"{}"
    resp.release()
    assert pool.stats.opened == 2 and pool.stats.closed_after_send == 0
    assert answered == [1, 1, 1, 2]
    pool.close()
    server.close()
    await server.wait_closed()
    for writer in writers:  # a closed server leaves its accepted connections open
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
