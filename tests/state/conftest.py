"""A real redis-server per test module, and hubs' shared-state parts in this process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.redis_proc import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


async def eventually(pred: Callable[[], bool], timeout: float = 30.0,
                     what: str = "condition") -> None:
    """Wait (without blocking the loop) until ``pred()``; generous deadline, no timing."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        await asyncio.sleep(0.02)
