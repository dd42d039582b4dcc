"""Response.read() refuses an answer over its cap instead of cutting it short."""

from __future__ import annotations

import pytest

from hub.upstream import MAX_BODY, Pool, UpstreamBodyTooLarge
from tests.upstream.conftest import Upstreams
from tests.upstream.fakes import RawConn, answer, answer_forever


def _chunked(body: bytes, piece: int = 1000) -> bytes:
    parts = [body[i:i + piece] for i in range(0, len(body), piece)]
    return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_over_the_limit_is_an_error_not_a_truncation(upstream: Upstreams,
                                                           framing: str) -> None:
    body = b"x" * 10_000
    reply = answer(body) if framing == "length" else _chunked(body)
    server = upstream(lambda conn: answer_forever(conn, reply))
    pool = Pool()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    with pytest.raises(UpstreamBodyTooLarge) as err:
        await resp.read(4096)
    assert err.value.limit == 4096 and "4 KiB" in str(err.value) and "4096 bytes" in str(err.value)
    resp.release()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert await resp.read(10_000) == body  # exactly at the cap is fine
    resp.release()
    assert pool.stats.opened == 2  # the refused answer's connection was closed
    pool.close()


async def test_pool_default_cap(upstream: Upstreams) -> None:
    assert Pool().max_body_bytes == MAX_BODY == 8 * 1024 * 1024
    assert "8 MiB" in str(UpstreamBodyTooLarge(MAX_BODY))

    def worker(conn: RawConn) -> None:
        while conn.read_request() is not None:
            conn.send(answer(b"y" * 3000))

    server = upstream(worker)
    pool = Pool(max_body_bytes=2048)
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    with pytest.raises(UpstreamBodyTooLarge) as err:
        await resp.read()
    assert err.value.limit == 2048
    resp.release()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert len(await resp.read(limit=4096)) == 3000  # a caller may allow more
    resp.release()
    pool.close()
