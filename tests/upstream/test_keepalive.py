"""Idle keep-alive connections are dropped before a worker's own idle limit."""

from __future__ import annotations

import threading

import pytest

from hub.upstream import KEEPALIVE_S, Pool
from tests.upstream.conftest import Upstreams
from tests.upstream.fakes import RawConn, answer, answer_forever, until

LLAMA_CPP_IDLE_S = 5.0  # cpp-httplib's default keep-alive timeout, as llama-server uses it


async def _post(pool: Pool, url: str) -> bytes:
    resp = await pool.request("POST", url, {}, b"{}", 5.0)
    try:
        return await resp.read()
    finally:
        resp.release()


def test_default_idle_limit_is_below_llamacpp() -> None:
    assert Pool().keepalive_s == KEEPALIVE_S < LLAMA_CPP_IDLE_S
    assert Pool(keepalive_s=1.5).keepalive_s == 1.5
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            Pool(keepalive_s=bad)


async def test_idle_connections_are_closed_by_the_pool(upstream: Upstreams) -> None:
    """A sweep closes the idle connection (the worker sees the hub hang up) instead of
    leaving it for the worker to close while a request may be on its way."""
    client_closed = threading.Event()

    def worker(conn: RawConn) -> None:
        assert conn.read_request() is not None
        conn.send(answer(b"{}"))
        if conn.wait_closed():
            client_closed.set()

    server = upstream(worker)
    pool = Pool(keepalive_s=0.05)
    assert await _post(pool, server.url) == b"{}"
    await until(client_closed.is_set)
    assert (pool.idle_count(), pool.stats.expired) == (0, 1)
    assert await _post(pool, server.url) == b"{}"
    assert pool.stats.opened == 2
    pool.close()


async def test_expired_connection_is_not_reused_at_checkout(upstream: Upstreams) -> None:
    server = upstream(answer_forever)
    pool = Pool(keepalive_s=60.0)
    assert await _post(pool, server.url) == b"{}"
    assert await _post(pool, server.url) == b"{}"
    assert (pool.stats.opened, pool.stats.reused) == (1, 1)
    for idle in pool._idle.values():
        for conn in idle:
            conn.idle_since -= 61.0  # as if a minute went by (the sweep is not due yet)
    assert await _post(pool, server.url) == b"{}"
    assert (pool.stats.opened, pool.stats.expired) == (2, 1)
    assert [r.conn for r in server.requests] == [0, 0, 1]
    pool.close()


@pytest.mark.parametrize(("header", "limit"), [
    (b"Keep-Alive: timeout=5, max=100\r\n", KEEPALIVE_S),  # llama.cpp's: 0.8 * 5 = 4
    (b"Keep-Alive: timeout=1\r\n", 0.8),
    (b"Keep-Alive: max=3\r\n", KEEPALIVE_S),
    (b"Keep-Alive: timeout=junk\r\n", KEEPALIVE_S),
    (b"Keep-Alive: timeout=0\r\n", None),  # not kept at all
])
async def test_worker_keep_alive_hint_shortens_the_limit(upstream: Upstreams, header: bytes,
                                                         limit: float | None) -> None:
    server = upstream(lambda conn: answer_forever(conn, answer(b"{}", extra_headers=header)))
    pool = Pool()
    assert await _post(pool, server.url) == b"{}"
    idle = [conn for conns in pool._idle.values() for conn in conns]
    if limit is None:
        assert idle == []
    else:
        assert [conn.idle_limit for conn in idle] == [pytest.approx(limit)]
    pool.close()


async def test_keepalive_zero_never_pools(upstream: Upstreams) -> None:
    server = upstream(answer_forever)
    pool = Pool(keepalive_s=0)
    for _ in range(3):
        assert await _post(pool, server.url) == b"{}"
    assert (pool.stats.opened, pool.idle_count()) == (3, 0)
    pool.close()
