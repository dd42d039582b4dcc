from __future__ import annotations

import asyncio

import pytest

from hub.errors import UpstreamTimeout
from hub.forward.deadline import Deadline


async def test_idle_timeout_fires_and_names_the_phase() -> None:
    with pytest.raises(UpstreamTimeout) as err:
        async with Deadline(idle_s=0.05, total_s=10):
            await asyncio.sleep(1)
    assert "first byte" in str(err.value)


async def test_progress_keeps_it_alive_then_total_cap() -> None:
    with pytest.raises(UpstreamTimeout) as err:
        async with Deadline(idle_s=5, total_s=0.3) as dl:
            dl.set_phase("next chunk", 2.0)  # generous: a loaded machine must not hit it
            for _ in range(100):
                await asyncio.sleep(0.02)
                dl.touch()
    assert "total" in str(err.value)


async def test_outside_cancel_passes_through() -> None:
    async def body() -> None:
        async with Deadline(idle_s=10, total_s=10):
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_timeout_when_done_in_time() -> None:
    async with Deadline(idle_s=0.5, total_s=1) as dl:
        await asyncio.sleep(0.01)
    assert dl.expired is None


async def test_touching_keeps_an_idle_deadline_alive() -> None:
    async with Deadline(idle_s=10, total_s=30) as dl:
        dl.set_phase("next chunk", 0.5)
        for _ in range(40):  # 0.8 s in all, longer than the idle allowance
            await asyncio.sleep(0.02)
            dl.touch()
    assert dl.expired is None
