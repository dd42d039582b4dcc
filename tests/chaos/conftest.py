"""Fixtures for the resilience tests: one bounded HTTP client session per test, and a
place to keep the figures a test measured (the test report's ``user_properties``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tests.support.load import session

# llama-server's HTTP thread pool grows on demand, and a burst of new keep-alive
# connections can leave a request unread in a socket for many seconds while the pool
# grows. A fixed pool larger than the test's concurrency keeps that worker-side stall
# out of tests that measure the hub.
LLAMA_HTTP_THREADS = ["--threads-http", "64"]

Figure = Callable[[str, object], None]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with session() as client:
        yield client


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Figure:
    """``figure(name, value)``: keep a measured number with the test's report."""
    def keep(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))
    return keep
