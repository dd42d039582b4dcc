"""Who goes next in the worker queue: priority classes, batch aging, and token-weighted
fair queuing between tenants. Pure and sync; times are passed in.

Order. The next waiter is the one with the smallest virtual start tag in the highest
class that has waiters (interactive, then batch, then sheddable); ties go to the
earlier arrival.

Fairness (start-time fair queuing, per class). Each class keeps a virtual time ``V``
(the start tag of the waiter it last let go) and each tenant its last finish tag
``F``. A waiter of cost ``c`` tokens from a tenant of weight ``w`` gets the start tag
``S = max(V, F)`` and moves the tenant's ``F`` to ``S + c / w``. So over a busy period
every backlogged tenant of a class is let go at the same rate of *tokens per weight*,
not of requests: a tenant sending long prompts waits longer between its requests than
one sending short ones. A waiter that leaves without being let go (timed out,
cancelled, shed) gives its charge back when it was its tenant's last one.

Aging. A batch waiter that has waited ``aging_s`` is promoted: from then on it ranks
as an interactive request of its tenant that arrived at that moment (it takes its
interactive start tag then, and its cost is charged to the tenant's interactive
share). It is then let go before every interactive request that arrives later (for
its own tenant; other tenants' later requests may precede it by at most their fair
share), so a batch request waits at most ``aging_s`` plus the time the fleet takes to
serve the interactive work already queued ahead of it at promotion: with a steady
interactive stream that leaves the queue near empty, about ``aging_s`` plus one
service time. Promotion is applied at every arrival and every pick, the only moments
that read or change tags, so it acts as if done at the exact moment.

Shedding (:meth:`FairOrder.room_for`). A sheddable arrival is refused once
``sheddable_max`` requests wait; any arrival is refused at ``max_waiters``, except
that a non-sheddable one then takes the place of the youngest sheddable waiter,
which is shed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush

from hub.admission.priority import BATCH, CLASSES, SHEDDABLE, rank

_SLACK = 64  # stale heap entries and idle tenant tags tolerated before a clean-up
IDLE_TAGS = 1024  # finish tags kept per class for tenants with nothing queued


@dataclass(eq=False, slots=True)
class Waiter:
    """One queued request's place; it keeps its tags across a re-queue."""

    tenant: str
    klass: str  # the class the request asked for
    cost: float  # estimated tokens
    weight: float
    arrived: float
    seq: int
    rank: int = 0  # the class it competes in now (a promoted batch waiter: 0)
    start: float = 0.0  # virtual start tag in that class
    finish: float = 0.0
    tagged: bool = False
    queued: bool = False
    gen: int = 0  # heap entries of an older generation are stale

    @property
    def promoted(self) -> bool:
        return self.tagged and self.rank < rank(self.klass)


_Entry = tuple[float, int, int, Waiter]  # (key, seq, gen, waiter)


class FairOrder:
    def __init__(self, aging_s: float) -> None:
        self.aging_s = aging_s
        self._heaps: list[list[_Entry]] = [[] for _ in CLASSES]  # by (start, seq)
        self._virtual = [0.0 for _ in CLASSES]
        self._finish: list[dict[str, float]] = [{} for _ in CLASSES]
        self._aging: list[_Entry] = []  # unpromoted batch waiters by (arrived, seq)
        self._shed: list[_Entry] = []  # sheddable waiters, youngest first
        self._seq = itertools.count()
        self._live = 0
        self.waiting: dict[str, int] = dict.fromkeys(CLASSES, 0)  # by asked class

    def __len__(self) -> int:
        return self._live

    def waiter(self, tenant: str, klass: str, cost: float, weight: float,
               now: float) -> Waiter:
        """A new arrival's place (not queued yet: :meth:`push` it)."""
        return Waiter(tenant, klass, max(0.0, cost), weight if weight > 0 else 1.0, now,
                      next(self._seq))

    def room_for(self, klass: str, max_waiters: int,
                 sheddable_max: int) -> tuple[bool, Waiter | None]:
        """Whether an arrival of ``klass`` may queue, and which waiter to shed for it."""
        n = self._live
        if klass == SHEDDABLE:
            return n < min(max_waiters, sheddable_max), None
        if n < max_waiters:
            return True, None
        victim = self.youngest_sheddable()
        return victim is not None, victim

    def youngest_sheddable(self) -> Waiter | None:
        heap = self._shed
        while heap:
            _, _, gen, w = heap[0]
            if w.queued and w.gen == gen:
                return w
            heappop(heap)
        return None

    def push(self, w: Waiter, now: float) -> None:
        """Queue ``w``: a new arrival gets its tags; a re-queued waiter keeps them, so
        it is first of its class again."""
        if w.queued:
            raise ValueError("waiter already queued")
        self._promote(now)
        if not w.tagged:
            self._tag(w, rank(w.klass))
        w.queued = True
        self._live += 1
        self.waiting[w.klass] += 1
        self._enter(w)
        self._promote(now)  # a re-queued batch waiter may be due already
        self._compact()

    def pop(self, now: float,
            eligible: Callable[[Waiter], bool] | None = None) -> Waiter | None:
        """The next waiter to let go (it leaves the queue), or None. With ``eligible``,
        the first in order that it accepts (e.g. one whose model has a free slot); the
        waiters passed over keep their places."""
        self._promote(now)
        for r, heap in enumerate(self._heaps):
            skipped: list[_Entry] = []
            try:
                while heap:
                    entry = heappop(heap)
                    start, _, gen, w = entry
                    if not (w.queued and w.gen == gen):
                        continue
                    if eligible is not None and not eligible(w):
                        skipped.append(entry)
                        continue
                    self._leave(w)
                    self._virtual[r] = max(self._virtual[r], start)
                    self._prune(r)
                    return w
            finally:
                for entry in skipped:
                    heappush(heap, entry)
        return None

    def remove(self, w: Waiter) -> None:
        """``w`` leaves without being let go (timed out, cancelled, shed)."""
        if w.queued:
            self._leave(w)
            self._untag(w)

    def _enter(self, w: Waiter) -> None:
        w.gen += 1
        heappush(self._heaps[w.rank], (w.start, w.seq, w.gen, w))
        if w.klass == BATCH and not w.promoted:
            heappush(self._aging, (w.arrived, w.seq, w.gen, w))
        elif w.klass == SHEDDABLE:
            heappush(self._shed, (-float(w.seq), w.seq, w.gen, w))

    def _leave(self, w: Waiter) -> None:
        w.queued = False
        self._live -= 1
        self.waiting[w.klass] -= 1

    def _tag(self, w: Waiter, r: int) -> None:
        finish = self._finish[r]
        virtual = self._virtual[r]
        w.rank = r
        w.start = max(virtual, finish.get(w.tenant, virtual))
        w.finish = w.start + w.cost / w.weight
        finish.pop(w.tenant, None)  # re-inserted: the dict is kept in order of use
        finish[w.tenant] = w.finish
        w.tagged = True

    def _untag(self, w: Waiter) -> None:
        """Give back the charge of a waiter that was not let go, if it was the last."""
        finish = self._finish[w.rank]
        if finish.get(w.tenant) == w.finish:
            finish[w.tenant] = w.start

    def _promote(self, now: float) -> None:
        heap = self._aging
        while heap:
            arrived, _, gen, w = heap[0]
            if not (w.queued and w.gen == gen):
                heappop(heap)
                continue
            if now - arrived < self.aging_s:
                return
            heappop(heap)
            self._untag(w)
            self._tag(w, 0)  # an interactive arrival of its tenant, now
            self._enter(w)  # the old batch entries go stale with the generation

    def _prune(self, r: int) -> None:
        """Forget tags that no longer matter (at or below the class's virtual time),
        then, past ``IDLE_TAGS`` more than the waiters, those of the tenants that came
        least recently (their unpaid share is forgiven)."""
        finish = self._finish[r]
        limit = 2 * self._live + _SLACK
        if len(finish) <= limit:
            return
        virtual = self._virtual[r]
        for tenant in [t for t, f in finish.items() if f <= virtual]:
            del finish[tenant]
        while len(finish) > self._live + IDLE_TAGS:
            del finish[next(iter(finish))]

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the live ones."""
        limit = 2 * self._live + _SLACK
        for heap in (*self._heaps, self._aging, self._shed):
            if len(heap) > limit:
                heap[:] = [e for e in heap if e[3].queued and e[3].gen == e[2]]
                heapify(heap)
