"""The hub runs the pool on uvloop: the socket peek and the write tracking work there too."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hub.upstream import Pool, UpstreamClosedAfterSend
from tests.upstream.conftest import Upstreams
from tests.upstream.fakes import OK, RawConn, answer_forever

uvloop = pytest.importorskip("uvloop")


def test_replay_rules_on_uvloop(upstream: Upstreams) -> None:
    closed = threading.Event()

    def closes_when_idle(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(OK)
        conn.close()
        closed.set()

    def dies_after_reading(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(OK)
        assert conn.read_request() is not None
        conn.close()

    server = upstream([closes_when_idle, dies_after_reading, answer_forever])

    async def scenario() -> None:
        pool = Pool()

        async def post(body: bytes) -> bytes:
            resp = await pool.request("POST", server.url, {}, body, 5.0)
            try:
                return await resp.read()
            finally:
                resp.release()

        assert await post(b"1") == b"{}"
        assert closed.wait(10)  # held still: only the peek can tell
        assert await post(b"2") == b"{}"  # safe: a fresh connection
        with pytest.raises(UpstreamClosedAfterSend):
            await post(b"3")  # read by the worker: never sent again
        assert pool.stats.stale == 1 and pool.stats.closed_after_send == 1
        pool.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
    assert [(r.conn, r.body) for r in server.requests] == [(0, b"1"), (1, b"2"), (1, b"3")]
