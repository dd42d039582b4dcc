"""Fire-and-forget Redis writes, kept referenced until done and cancelled at stop;
and the loop of the parts that share on a beat.

Shared-state writes run beside the request or heartbeat that caused them, never in
front of it: the caller has already changed local state and answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("spokehub.state")


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro, name=name)
        except RuntimeError:  # no loop (a sync unit test): nothing to share with
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("shared state: %s failed", task.get_name(),
                      exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the writes in flight (tests, and a clean stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._tasks.clear()


class Ticker:
    """Runs ``tick`` every ``every_s()`` seconds (at once after :meth:`kick`) until
    closed. A tick that fails is logged and the next one still runs; errors in
    ``handled`` were already counted by the tick itself and pass silently."""

    def __init__(self, tick: Callable[[], Awaitable[None]], every_s: Callable[[], float],
                 what: str, *, handled: tuple[type[BaseException], ...] = ()) -> None:
        self._tick = tick
        self._every_s = every_s  # read each round: a reload may change it
        self.what = what
        self._handled = handled
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"spokehub-{self.what.replace(' ', '-')}")

    def kick(self) -> None:
        self._kick.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every_s()):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self._tick()
            except self._handled:
                pass
            except Exception:  # never let one bad tick stop the sharing
                log.exception("%s: tick failed", self.what)
