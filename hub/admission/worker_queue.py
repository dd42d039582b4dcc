"""Requests wait in the hub, not in overloaded workers.

When every healthy worker for a model is at its ``max_concurrency``, a request
queues here, bounded in length (``admission.worker_queue_max``) and time
(``admission.worker_queue_timeout_s``), and is woken when a request finishes. Who is
woken is :mod:`hub.admission.fair_order`'s decision: priority classes (interactive,
then aged batch, then sheddable) and token-weighted fairness between tenants of a
class. Past the bounds a request gets a 503 with ``Retry-After``; a sheddable one is
refused (or shed from the queue) first, with the code ``shed``.

A waiter keeps its :class:`Place` across re-queues (woken, but another request took
the slot first): it stays first of its class. A waiter cancelled after being woken
passes its wake-up on.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from types import TracebackType

from hub.admission.fair_order import FairOrder, Waiter
from hub.admission.priority import CLASSES, INTERACTIVE, SHEDDABLE
from hub.errors import HubError

MAX_RETRY_AFTER_S = 60
_DRAIN_ALPHA = 0.2  # weight of the newest gap in the average time between wake-ups


WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class WaitHist:
    """Queue waits of one class: bucket counts (the last above every bound) and a sum,
    for a Prometheus histogram at scrape time."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(WAIT_BUCKETS, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


class WorkersBusy(HubError):
    status = 503
    type = "server_error"
    code = "workers_busy"


class Shed(WorkersBusy):
    """A sheddable request refused or dropped from a full queue for a higher one."""

    code = "shed"


class Place:
    """One request's place in the queue; use as a context manager around its waits."""

    __slots__ = ("_queue", "cost", "klass", "model", "route", "tenant", "waiter")

    def __init__(self, queue: CapacityQueue, tenant: str, klass: str, cost: float, *,
                 model: str = "", route: str | None = None) -> None:
        self._queue = queue
        self.tenant = tenant
        self.klass = klass
        self.cost = cost
        self.model = model  # what it waits for: a worker with room for this model
        self.route = route  #   on this route
        self.waiter: Waiter | None = None  # set when it first queues

    def __enter__(self) -> Place:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._queue.done(self)

    async def wait(self, deadline: float) -> None:
        await self._queue.wait(deadline, self)


class CapacityQueue:
    def __init__(self, max_waiters: int, timeout_s: float, *, aging_s: float = 10.0,
                 sheddable_max: int | None = None,
                 weight: Callable[[str], float] = lambda tenant: 1.0,
                 has_room: Callable[[str, str | None], bool] = lambda model, route: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_waiters = max_waiters
        self.timeout_s = timeout_s
        self.sheddable_max = max_waiters // 2 if sheddable_max is None else sheddable_max
        self.weight = weight
        self.has_room = has_room  # (model, route): may a waiter for it go now?
        self._clock = clock
        self.order = FairOrder(aging_s)
        self._futures: dict[Waiter, tuple[asyncio.Future[None], Place]] = {}
        self._last_wake: float | None = None
        self._wake_gap_s: float | None = None  # average time between wake-ups
        self.shed_total: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.wait_s: dict[str, WaitHist] = {c: WaitHist() for c in CLASSES}

    def __len__(self) -> int:
        return len(self.order)

    @property
    def aging_s(self) -> float:
        return self.order.aging_s

    @aging_s.setter
    def aging_s(self, value: float) -> None:
        self.order.aging_s = value

    @property
    def waiting(self) -> dict[str, int]:
        """Requests waiting now, by the class they asked for."""
        return self.order.waiting

    def place(self, tenant: str = "-", klass: str = INTERACTIVE, cost: float = 1.0,
              model: str = "", route: str | None = None) -> Place:
        return Place(self, tenant, klass, cost, model=model, route=route)

    def busy(self, why: str) -> WorkersBusy:
        return WorkersBusy(f"Every worker for this model is at capacity ({why}); retry shortly",
                           headers={"Retry-After": "1"})

    def shed(self, klass: str, why: str) -> Shed:
        self.shed_total[klass] += 1
        return Shed(f"Every worker for this model is at capacity and {klass} requests are "
                    f"refused first ({why}); retry later",
                    headers={"Retry-After": str(self.retry_after_s())})

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: its length times the average
        time between wake-ups (1 before any is known), within 1..60."""
        gap = self._wake_gap_s
        if gap is None:
            return 1
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(len(self) * gap)))

    async def wait(self, deadline: float, place: Place) -> None:
        """Wait for a wake-up until ``deadline`` (loop time); raise WorkersBusy (or Shed)
        when the queue has no room or the deadline passes."""
        order = self.order
        now = self._clock()
        w = place.waiter
        if w is None:  # a first arrival; a re-queue had its room already
            ok, victim = order.room_for(place.klass, self.max_waiters, self.sheddable_max)
            if victim is not None:
                self._drop(victim)
            if not ok:
                why = f"{len(order)} requests already waiting"
                raise self.shed(place.klass, why) if place.klass == SHEDDABLE else self.busy(why)
            w = place.waiter = order.waiter(place.tenant, place.klass, place.cost,
                                            self.weight(place.tenant), now)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[w] = fut, place
        order.push(w, now)
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.wake()  # woken as the deadline passed: the slot goes to the next
            raise self.busy(f"waited {self.timeout_s:g}s") from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.wake()  # we were handed a free slot we will not use: pass it on
            raise
        finally:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # retrieved, so a shed we did not await logs nothing
            self._futures.pop(w, None)
            order.remove(w)

    def _drop(self, victim: Waiter) -> None:
        """Shed a queued sheddable waiter to make room for a higher one."""
        self.order.remove(victim)
        held = self._futures.get(victim)
        if held is not None and not held[0].done():
            held[0].set_exception(self.shed(victim.klass, "the queue is full"))

    def wake(self) -> None:
        """A request finished: let the next waiter whose model has room try again (one
        waiting for a model whose workers are all still busy keeps its place)."""
        now = self._clock()
        room: dict[tuple[str, str | None], bool] = {}

        def eligible(w: Waiter) -> bool:
            held = self._futures.get(w)
            if held is None:
                return True  # nobody waits on it: popped and dropped below
            key = (held[1].model, held[1].route)
            if key not in room:
                room[key] = self.has_room(*key)
            return room[key]

        while True:
            w = self.order.pop(now, eligible)
            if w is None:
                return
            held = self._futures.get(w)
            if held is not None and not held[0].done():
                held[0].set_result(None)
                self._note_wake(now)
                return

    def _note_wake(self, now: float) -> None:
        """Average the time between wake-ups while requests keep waiting."""
        last = self._last_wake
        self._last_wake = now if len(self.order) else None
        if last is None:
            return
        gap = now - last
        avg = self._wake_gap_s
        self._wake_gap_s = gap if avg is None else avg + _DRAIN_ALPHA * (gap - avg)

    def done(self, place: Place) -> None:
        """The request stopped waiting (served, refused or gone): count its wait."""
        w = place.waiter
        if w is None:
            return
        self.order.remove(w)
        self.wait_s[w.klass].observe(max(0.0, self._clock() - w.arrived))

