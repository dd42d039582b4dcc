"""A request is sent again only when the worker provably never received it in full."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from hub.upstream import Pool, UpstreamClosedAfterSend, UpstreamClosedEarly
from hub.upstream.connection import Connection
from tests.upstream.conftest import Upstreams
from tests.upstream.fakes import OK, RawConn, answer, answer_forever


async def _post(pool: Pool, url: str, prompt: bytes) -> bytes:
    resp = await pool.request("POST", url, {"Content-Type": "application/json"}, prompt, 5.0)
    try:
        return await resp.read()
    finally:
        resp.release()


async def test_no_resend_after_the_worker_read_the_request(upstream: Upstreams) -> None:
    """The worker answers once, then reads the second prompt and dies without a byte."""

    def first(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(OK)
        assert conn.read_request() is not None  # read it whole (and "work on it")...
        conn.close()  # ...then crash

    server = upstream([first, answer_forever])
    pool = Pool()
    assert await _post(pool, server.url, b'{"prompt": "one"}') == b"{}"
    with pytest.raises(UpstreamClosedAfterSend) as err:
        await _post(pool, server.url, b'{"prompt": "two"}')
    assert err.value.reused
    assert server.bodies().count(b'{"prompt": "two"}') == 1
    assert (pool.stats.opened, pool.stats.closed_after_send, pool.stats.resent) == (1, 1, 0)
    pool.close()


async def test_close_after_send_on_a_fresh_connection_is_typed(upstream: Upstreams) -> None:
    def swallow(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.close()

    server = upstream(swallow)
    pool = Pool()
    with pytest.raises(UpstreamClosedAfterSend) as err:
        await _post(pool, server.url, b'{"prompt": "x"}')
    assert not err.value.reused
    assert server.bodies() == [b'{"prompt": "x"}']
    pool.close()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_idle_close_seen_before_write_goes_to_a_fresh_connection(
        upstream: Upstreams, how: str) -> None:
    """The worker closed the idle connection before the next request: the loop has not
    noticed yet (it is held still here), but the pool looks before writing."""
    closed = threading.Event()

    def once(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(OK)
        conn.close() if how == "close" else conn.reset()
        closed.set()

    server = upstream([once, answer_forever])
    pool = Pool()
    assert await _post(pool, server.url, b"1") == b"{}"
    assert closed.wait(10)  # blocks the loop: its view of the socket is out of date
    assert await _post(pool, server.url, b"2") == b"{}"
    assert [(r.conn, r.body) for r in server.requests] == [(0, b"1"), (1, b"2")]
    assert (pool.stats.stale, pool.stats.reused, pool.stats.opened) == (1, 0, 2)
    pool.close()


async def test_bytes_on_an_idle_connection_are_never_read_as_the_next_answer(
        upstream: Upstreams) -> None:
    answered, sent_junk = threading.Event(), threading.Event()

    def babbler(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(OK)
        assert answered.wait(10)
        conn.send(answer(b"junk"))  # an answer to nothing, while the connection is idle
        sent_junk.set()
        conn.read_request()

    server = upstream([babbler, answer_forever])
    pool = Pool()
    assert await _post(pool, server.url, b"1") == b"{}"
    answered.set()
    assert sent_junk.wait(10)  # blocks the loop: it has not seen the junk arrive
    assert await _post(pool, server.url, b"2") == b"{}"
    assert [(r.conn, r.body) for r in server.requests] == [(0, b"1"), (1, b"2")]
    pool.close()


class _FailingWrite:
    """A transport whose next write fails at once (as a write into a reset socket does)."""

    def __init__(self, real: asyncio.Transport) -> None:
        self._real = real

    def write(self, data: bytes) -> None:
        self._real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_a_write_that_failed_is_resent_once_on_a_fresh_connection(
        upstream: Upstreams) -> None:
    server = upstream(answer_forever)
    pool = Pool()
    assert await _post(pool, server.url, b"1") == b"{}"
    (conn,) = next(iter(pool._idle.values()))
    assert conn.transport is not None
    conn.transport = _FailingWrite(conn.transport)  # type: ignore[assignment]
    assert await _post(pool, server.url, b"2") == b"{}"
    assert [(r.conn, r.body) for r in server.requests] == [(0, b"1"), (1, b"2")]
    assert (pool.stats.reused, pool.stats.resent, pool.stats.opened) == (1, 1, 2)
    pool.close()


class _StubTransport(asyncio.Transport):
    """Keeps what is written; ``flushed`` decides whether the kernel took it all."""

    def __init__(self, protocol: Connection, *, flushed: bool) -> None:
        super().__init__()
        self.protocol = protocol
        self.flushed = flushed
        self.closing = False

    def write(self, data: Any) -> None:
        if not self.flushed:
            self.protocol.pause_writing()  # bytes left in the buffer

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@pytest.mark.parametrize(("flushed", "drained", "error"), [
    (True, False, UpstreamClosedAfterSend),
    (False, True, UpstreamClosedAfterSend),  # the rest went out later
    (False, False, UpstreamClosedEarly),  # part of it never left: the worker has no request
])
async def test_close_is_classified_by_whether_the_request_left_in_full(
        flushed: bool, drained: bool, error: type[Exception]) -> None:
    conn = Connection(("http", "127.0.0.1", 1))
    conn.connection_made(_StubTransport(conn, flushed=flushed))
    conn.send(b"POST / HTTP/1.1\r\n\r\n", "POST")
    if drained:
        conn.resume_writing()
    conn.connection_lost(None)
    with pytest.raises(error):
        await conn.read_head()


async def test_connection_close_answers_are_never_pooled(upstream: Upstreams) -> None:
    def one_shot(conn: RawConn) -> None:
        if conn.read_request() is not None:
            conn.send(answer(b"{}", extra_headers=b"Connection: close\r\n"))
            conn.close()

    server = upstream(one_shot)
    pool = Pool()
    for i in range(10):
        assert await _post(pool, server.url, b"%d" % i) == b"{}"
    assert server.bodies() == [b"%d" % i for i in range(10)]
    assert (pool.stats.opened, pool.stats.reused, pool.idle_count()) == (10, 0, 0)
    pool.close()
