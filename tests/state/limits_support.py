"""Fixtures for the shared limits tests: a real redis-server and links for two hubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest_asyncio.fixture
async def two_links(redis_server: RedisServer) -> AsyncIterator[tuple[LinkForTests,
                                                                       LinkForTests]]:
    """Links of "hub A" and "hub B" to one Redis, in a namespace of their own."""
    ns = f"t{id(redis_server)}{redis_server.port}{_count()}"
    a = LinkForTests(redis_server.url, "hub-a", ns)
    b = LinkForTests(redis_server.url, "hub-b", ns)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


_n = [0]


def _count() -> int:
    _n[0] += 1
    return _n[0]


def fresh_redis(tmp: Path) -> RedisServer:
    return RedisServer(tmp).start()
