"""A cheap watchdog for upstream timeouts.

``asyncio.timeout`` per chunk would schedule a timer per chunk; instead one timer
re-arms itself from a ``last progress`` timestamp that the relay bumps per chunk
(one ``loop.time()`` call). When it expires it cancels the task, and leaving the
``async with`` turns that cancellation into :class:`UpstreamTimeout`. A cancel
from anywhere else (client disconnect) passes through untouched.

The idle allowance measures the worker: the relay pauses it while a write waits for a
slow client (:meth:`Deadline.pause`, :meth:`Deadline.resume`). The total allowance
always runs, so a client that never reads cannot hold a worker's slot for ever.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from hub.errors import UpstreamTimeout


class Deadline:
    __slots__ = ("_handle", "_loop", "_task", "expired", "idle_s", "last", "paused", "phase",
                 "total_at")

    def __init__(self, idle_s: float, total_s: float, phase: str = "first byte") -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.idle_s = idle_s
        self.total_at = now + total_s
        self.last = now
        self.phase = phase
        self.paused = False
        self.expired: str | None = None
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        self.last = self._loop.time()

    def pause(self) -> None:
        """The hub waits on the client (a write): idle time stops counting."""
        self.paused = True

    def resume(self) -> None:
        """Back to waiting on the worker: its idle allowance starts afresh."""
        self.paused = False
        self.last = self._loop.time()

    def set_phase(self, phase: str, idle_s: float) -> None:
        """Switch e.g. from 'first byte' to 'idle' with a new allowance, from now."""
        self.phase = phase
        self.idle_s = idle_s
        self.last = self._loop.time()
        self._arm()

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        # While paused, look again one idle allowance from now (one timer, not one per write).
        since = self._loop.time() if self.paused else self.last
        when = min(since + self.idle_s, self.total_at)
        self._handle = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self.total_at:
            self._fire("total")
        elif not self.paused and now >= self.last + self.idle_s:
            self._fire(self.phase)
        else:
            self._arm()

    def _fire(self, what: str) -> None:
        self._handle = None
        self.expired = what
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> Deadline:
        self._task = asyncio.current_task()
        self._arm()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.expired is not None and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise UpstreamTimeout(f"upstream timed out waiting for {self.expired}") from exc
