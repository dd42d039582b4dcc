from __future__ import annotations

import random

import pytest

from hub.upstream.errors import UpstreamProtocolError
from hub.upstream.http1 import ChunkedBody, Head, LengthBody, UntilCloseBody, body_decoder


def _chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    return out + b"0\r\n" + trailer + b"\r\n"


@pytest.mark.parametrize("seed", range(20))
def test_chunked_any_split(seed: int) -> None:
    rng = random.Random(seed)
    parts = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
             for _ in range(rng.randrange(1, 30))]
    wire = _chunked(parts, b"X-Trailer: 1\r\n" if seed % 2 else b"")
    dec = ChunkedBody()
    got = b""
    pos = 0
    while pos < len(wire):
        step = rng.randrange(1, 64)
        got += dec.feed(wire[pos:pos + step])
        pos += step
    assert got == b"".join(parts)
    assert dec.done


def test_chunked_big_buffer_is_linear() -> None:
    event = b"data: " + b"x" * 200 + b"\n\n"
    wire = _chunked([event] * 20000)
    dec = ChunkedBody()
    assert dec.feed(wire) == event * 20000 and dec.done


@pytest.mark.parametrize("wire", [b"zz\r\n", b"5\r\nabcdeXX", b"1" * 5000])
def test_chunked_garbage(wire: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkedBody().feed(wire)


def test_length_and_close_bodies() -> None:
    dec = LengthBody(5)
    assert dec.feed(b"abc") == b"abc" and not dec.done
    assert dec.feed(b"de") == b"de" and dec.done
    assert not LengthBody(5).eof()
    until = UntilCloseBody()
    assert until.feed(b"x") == b"x" and until.eof()


def test_head_and_decoder_choice() -> None:
    head = Head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: keep-alive")
    assert head.status == 200 and head.get("content-type") == "text/event-stream"
    assert head.keep_alive and isinstance(body_decoder(head, "POST"), ChunkedBody)
    assert not Head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").keep_alive
    assert body_decoder(Head(b"HTTP/1.1 204 No Content"), "POST").done
    for bad in (b"garbage", b"HTTP/1.1 abc OK", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(UpstreamProtocolError):
            Head(bad)
    with pytest.raises(UpstreamProtocolError):
        body_decoder(Head(b"HTTP/1.1 200 OK\r\nContent-Length: -1"), "POST")
