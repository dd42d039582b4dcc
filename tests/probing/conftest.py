from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hub.probing.http import new_pool
from hub.upstream import Pool


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    """A probe pool of its own per test, closed at the end."""
    pool = new_pool()
    yield pool
    pool.close()
