"""Requests wait in the hub, not in overloaded workers.

When every healthy worker for a model is at its ``max_concurrency``, a request
queues here (FIFO, bounded in length and time) and is woken when any request
finishes. Past the bounds it gets a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from hub.errors import HubError


class WorkersBusy(HubError):
    status = 503
    type = "server_error"
    code = "workers_busy"


class CapacityQueue:
    def __init__(self, max_waiters: int, timeout_s: float) -> None:
        self.max_waiters = max_waiters
        self.timeout_s = timeout_s
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def busy(self, why: str) -> WorkersBusy:
        return WorkersBusy(f"Every worker for this model is at capacity ({why}); retry shortly",
                           headers={"Retry-After": "1"})

    async def wait(self, deadline: float, *, front: bool = False) -> None:
        """Wait for a wake-up until ``deadline`` (loop time); raise WorkersBusy after it."""
        if len(self._waiters) >= self.max_waiters and not front:
            raise self.busy(f"{len(self._waiters)} requests already waiting")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if front:
            self._waiters.appendleft(fut)
        else:
            self._waiters.append(fut)
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            raise self.busy(f"waited {self.timeout_s:g}s") from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.wake()  # we were handed a free slot we will not use: pass it on
            raise
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def wake(self) -> None:
        """A request finished: let the longest waiter try again."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
