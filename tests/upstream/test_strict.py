"""Framing the parser refuses (RFC 9112 sections 6-7) and the leniencies it keeps."""

from __future__ import annotations

import threading

import pytest

from hub.upstream import Pool, UpstreamProtocolError
from hub.upstream.http1 import (
    MAX_TRAILERS,
    ChunkedBody,
    Head,
    LengthBody,
    UntilCloseBody,
    body_decoder,
)
from tests.upstream.conftest import Upstreams
from tests.upstream.fakes import OK, RawConn, answer_forever, until


def _decoder(head: bytes, method: str = "POST") -> object:
    return body_decoder(Head(b"HTTP/1.1 200 OK" + (b"\r\n" + head if head else b"")), method)


@pytest.mark.parametrize("size", [b"0x3", b"1_0", b"+3", b"-3", b"1 0", b"", b" 3", b"3 ",
                                  b"\t3", b"3\x00", b"\xd9\xa3", b"1" * 17])
def test_chunk_size_must_be_plain_hex(size: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkedBody().feed(size + b"\r\nabc\r\n0\r\n\r\n")


@pytest.mark.parametrize("line", [b"3;ext=1", b"3 ;ext", b"3;a=\"q;x\";b", b"03", b"3\t;x"])
def test_chunk_extensions_are_allowed(line: bytes) -> None:
    dec = ChunkedBody()
    assert dec.feed(line + b"\r\nabc\r\n0\r\n\r\n") == b"abc"
    assert dec.done and not dec.extra


def test_trailers_are_read_and_dropped_within_a_bound() -> None:
    dec = ChunkedBody()
    assert dec.feed(b"1\r\na\r\n0\r\nX-Checksum: 1\r\nX-Other:\r\n\r\n") == b"a"
    assert dec.done and not dec.extra
    big = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    with pytest.raises(UpstreamProtocolError):
        ChunkedBody().feed(b"0\r\n" + big * (MAX_TRAILERS // len(big) + 1) + b"\r\n")
    with pytest.raises(UpstreamProtocolError):  # one endless trailer line, in pieces
        dec = ChunkedBody()
        dec.feed(b"0\r\nX-Pad: ")
        for _ in range(MAX_TRAILERS // 1000 + 1):
            dec.feed(b"p" * 1000)
    with pytest.raises(UpstreamProtocolError):
        ChunkedBody().feed(b"0\r\nnot a field\r\n\r\n")


def test_bytes_after_the_end_of_a_body_are_kept_apart() -> None:
    dec = ChunkedBody()
    assert dec.feed(b"2\r\nab\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n") == b"ab"
    assert dec.done and dec.extra == b"HTTP/1.1 200 OK\r\n"
    length = LengthBody(2)
    assert length.feed(b"abXY") == b"ab"
    assert length.done and length.extra == b"XY"


def test_chunked_line_dribbled_a_byte_at_a_time() -> None:
    wire = b"a;name=value\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"
    dec = ChunkedBody()
    got = b"".join(dec.feed(wire[i:i + 1]) for i in range(len(wire)))
    assert got == b"0123456789" and dec.done and not dec.extra


@pytest.mark.parametrize("value", ["+5", "-1", "1_0", "1 0", "", "0x5", "5, 5", "5,5",
                                   "\u0665", "\u00b2", "1" * 19])
def test_content_length_must_be_plain_digits(value: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        _decoder(f"Content-Length: {value}".encode("latin-1", "replace"))


@pytest.mark.parametrize("head", [
    b"Content-Length: 5\r\nContent-Length: 5",  # even equal: refused
    b"Content-Length: 5\r\nContent-Length: 6",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
])
def test_framing_headers_must_not_repeat(head: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        _decoder(head)


@pytest.mark.parametrize("coding", ["gzip, chunked", "chunked, chunked", "identity", "gzip",
                                    "chunked;q=1", ""])
def test_transfer_encoding_must_be_chunked_alone(coding: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        _decoder(f"Transfer-Encoding: {coding}".encode())


def test_content_length_with_transfer_encoding_is_refused() -> None:
    with pytest.raises(UpstreamProtocolError):
        _decoder(b"Content-Length: 3\r\nTransfer-Encoding: chunked")
    assert isinstance(_decoder(b"Transfer-Encoding: Chunked"), ChunkedBody)
    assert isinstance(_decoder(b"Content-Length: 007"), LengthBody)
    assert isinstance(_decoder(b""), UntilCloseBody)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 +200 OK", b"HTTP/1.1 2_00 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK",
    b"HTTP/2 200 OK", b"http/1.1 200 OK", b"HTTP/1.1 099 Low", b" HTTP/1.1 200 OK",
    b"HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2",  # bare LF
    b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2",  # bare CR
    b"HTTP/1.1 200 OK\r\nX-A: \x00",
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded",
    b"HTTP/1.1 200 OK\r\nContent-Length : 5",  # whitespace before the colon
    b"HTTP/1.1 200 OK\r\n: no name",
    b"HTTP/1.1 200 OK\r\nX(A): 1",
])
def test_malformed_heads(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        Head(raw)


def test_heads_that_are_fine() -> None:
    head = Head(b"HTTP/1.1 200\r\nX-Empty:\r\nX-Tab:\tv \t\r\nX-Obs: caf\xe9")
    assert (head.status, head.reason) == (200, "")
    assert head.headers == {"x-empty": "", "x-tab": "v", "x-obs": "caf\u00e9"}
    assert Head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive").keep_alive
    assert not Head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n"
                    b"Transfer-Encoding: chunked").keep_alive
    assert not Head(b"HTTP/1.1 200 OK\r\nConnection: upgrade, Close").keep_alive


@pytest.mark.parametrize(("status", "method"), [(204, "POST"), (304, "GET"), (200, "HEAD")])
async def test_bodiless_answers_keep_the_connection(upstream: Upstreams, status: int,
                                                   method: str) -> None:
    """No body even with a Content-Length; the next answer is read from the right place."""
    reply = f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode()

    def worker(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(reply)
        answer_forever(conn)

    server = upstream(worker)
    pool = Pool()
    resp = await pool.request(method, server.url, {}, b"", 5.0)
    assert resp.status == status and await resp.read() == b"" and resp.is_eof()
    resp.release()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert await resp.read() == b"{}"
    resp.release()
    assert pool.stats.opened == 1
    pool.close()


async def test_interim_answers_are_skipped(upstream: Upstreams) -> None:
    def worker(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK)
        answer_forever(conn)

    server = upstream(worker)
    pool = Pool()
    for _ in range(2):
        resp = await pool.request("POST", server.url, {}, b"", 5.0)
        assert resp.status == 200 and await resp.read() == b"{}"
        resp.release()
    assert pool.stats.opened == 1
    pool.close()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" * 17 + OK,
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nX: " + b"x" * (70 * 1024) + b"\r\n\r\n{}",
])
async def test_refused_answers_close_the_connection(upstream: Upstreams, reply: bytes) -> None:
    def worker(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(reply)
        answer_forever(conn)

    server = upstream([worker, answer_forever])
    pool = Pool()
    with pytest.raises(UpstreamProtocolError):
        resp = await pool.request("POST", server.url, {}, b"", 5.0)
        try:
            await resp.read()
        finally:
            resp.release()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert await resp.read() == b"{}"
    resp.release()
    assert pool.stats.opened == 2  # the refused one was not pooled
    pool.close()


@pytest.mark.parametrize("reply", [
    OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nXX",
])
async def test_bytes_after_the_body_fail_the_answer(upstream: Upstreams, reply: bytes) -> None:
    """A body followed by more bytes: the framing lied somewhere, so the answer is not
    trusted, and the connection is not reused (its next 'answer' would be those bytes)."""
    def worker(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(reply)
        answer_forever(conn)

    server = upstream([worker, answer_forever])
    pool = Pool()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    with pytest.raises(UpstreamProtocolError):
        await resp.read()
    resp.release()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert await resp.read() == b"{}"
    resp.release()
    assert [r.conn for r in server.requests] == [0, 1]
    pool.close()


async def test_bytes_after_the_body_in_a_later_read_close_the_idle_connection(
        upstream: Upstreams) -> None:
    more = threading.Event()

    def worker(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(OK)
        assert more.wait(10)
        conn.send(b"X")
        answer_forever(conn)

    server = upstream([worker, answer_forever])
    pool = Pool()
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert await resp.read() == b"{}"
    resp.release()
    more.set()
    await until(lambda: pool.idle_count() == 0)  # the stray byte drops the connection
    resp = await pool.request("POST", server.url, {}, b"", 5.0)
    assert await resp.read() == b"{}"
    resp.release()
    assert [r.conn for r in server.requests] == [0, 1]
    pool.close()
