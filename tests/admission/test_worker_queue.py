"""CapacityQueue: waiting, waking in priority order, shedding, bounds, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hub.admission.fair_order import FairOrder
from hub.admission.priority import BATCH, INTERACTIVE, SHEDDABLE
from hub.admission.worker_queue import CapacityQueue, Place, Shed, WorkersBusy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


FAR = 1e12  # a deadline (loop time) that never comes in these tests


def queue(max_waiters: int = 10, *, sheddable_max: int | None = None,
          aging_s: float = 30.0, clock: Clock | None = None,
          weights: dict[str, float] | None = None) -> CapacityQueue:
    w = weights or {}
    return CapacityQueue(max_waiters, 60.0, aging_s=aging_s, sheddable_max=sheddable_max,
                         weight=lambda t: w.get(t, 1.0), clock=clock or Clock())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Runner:
    """Waiters as tasks; ``served`` in the order they were woken."""

    def __init__(self, q: CapacityQueue) -> None:
        self.q = q
        self.served: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def add(self, name: str, klass: str = INTERACTIVE, tenant: str = "t",
                  cost: float = 100.0, deadline: float = FAR) -> asyncio.Task[None]:
        async def run() -> None:
            with self.q.place(tenant, klass, cost) as place:
                await place.wait(deadline)
            self.served.append(name)

        task = self.tasks[name] = asyncio.create_task(run())
        await settle()
        return task

    async def wake(self, n: int = 1) -> None:
        for _ in range(n):
            self.q.wake()
            await settle()

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def test_interactive_is_woken_before_earlier_batch() -> None:
    q = queue()
    r = Runner(q)
    for name in ("b1", "b2", "b3"):
        await r.add(name, BATCH)
    for name in ("i1", "i2"):
        await r.add(name, INTERACTIVE)
    assert q.waiting == {INTERACTIVE: 2, BATCH: 3, SHEDDABLE: 0} and len(q) == 5
    await r.wake(5)
    assert r.served == ["i1", "i2", "b1", "b2", "b3"]
    assert len(q) == 0
    assert q.wait_s[BATCH].counts and sum(q.wait_s[BATCH].counts) == 3
    assert sum(q.wait_s[INTERACTIVE].counts) == 2
    await r.close()


async def test_aged_batch_is_woken_before_later_interactive() -> None:
    clock = Clock()
    q = queue(aging_s=5.0, clock=clock)
    r = Runner(q)
    await r.add("b", BATCH)
    clock.now += 6.0
    await r.add("i", INTERACTIVE)
    await r.wake(2)
    assert r.served == ["b", "i"]
    await r.close()


async def test_full_queue_sheds_the_youngest_sheddable_with_retry_after() -> None:
    q = queue(3, sheddable_max=3)
    r = Runner(q)
    old = await r.add("s-old", SHEDDABLE)
    young = await r.add("s-young", SHEDDABLE)
    await r.add("b", BATCH)
    await r.add("i", INTERACTIVE)  # full: takes s-young's place
    assert young.done() and not old.done()
    exc = young.exception()
    assert isinstance(exc, Shed) and exc.status == 503 and exc.code == "shed"
    assert int(exc.headers["Retry-After"]) >= 1
    assert q.shed_total[SHEDDABLE] == 1 and len(q) == 3
    await r.wake(3)
    assert r.served == ["i", "b", "s-old"]
    await r.close()


async def test_sheddable_refused_at_its_threshold_others_still_queue() -> None:
    q = queue(10, sheddable_max=1)
    r = Runner(q)
    await r.add("s1", SHEDDABLE)
    with pytest.raises(Shed) as info, q.place("t", SHEDDABLE) as place:
        await place.wait(FAR)
    assert info.value.headers["Retry-After"] == "1"  # no drain rate known yet
    await r.add("b", BATCH)
    assert len(q) == 2 and q.shed_total[SHEDDABLE] == 1
    await r.close()


async def test_full_queue_without_sheddable_refuses_with_workers_busy() -> None:
    q = queue(1)
    r = Runner(q)
    await r.add("b", BATCH)
    with pytest.raises(WorkersBusy) as info, q.place("t", INTERACTIVE) as place:
        await place.wait(FAR)
    assert info.value.code == "workers_busy" and info.value.headers["Retry-After"] == "1"
    await r.close()


async def test_retry_after_follows_the_drain_rate() -> None:
    clock = Clock()
    q = queue(20, sheddable_max=4, clock=clock)
    r = Runner(q)
    for i in range(10):
        await r.add(f"b{i}", BATCH)
    for _ in range(4):  # a wake-up every 2 s
        clock.now += 2.0
        await r.wake()
    assert len(q) == 6
    with pytest.raises(Shed) as info, q.place("t", SHEDDABLE) as place:
        await place.wait(FAR)
    assert info.value.headers["Retry-After"] == "12"  # 6 waiting x 2 s
    await r.close()


async def test_deadline_gives_workers_busy_and_leaves_the_queue() -> None:
    q = queue()
    loop = asyncio.get_running_loop()
    with pytest.raises(WorkersBusy), q.place("t", BATCH) as place:
        await place.wait(loop.time() + 0.01)
    assert len(q) == 0 and sum(q.wait_s[BATCH].counts) == 1


async def test_a_cancelled_woken_waiter_passes_its_wake_up_on() -> None:
    q = queue()
    r = Runner(q)
    first = await r.add("first")
    await r.add("second")
    q.wake()  # first is handed the slot ...
    first.cancel()  # ... and leaves before using it
    await settle()
    assert r.served == ["second"]
    await r.close()


async def test_a_requeued_place_stays_first_of_its_class() -> None:
    q = queue()
    r = Runner(q)
    woken: list[str] = []

    async def requeuer() -> None:
        with q.place("t", BATCH) as place:
            await place.wait(FAR)
            woken.append("first wake")
            await place.wait(FAR)  # someone else took the slot: wait again
        r.served.append("requeued")

    task = asyncio.create_task(requeuer())
    await settle()
    await r.add("b-later", BATCH)
    await r.wake()
    assert woken == ["first wake"] and len(q) == 2
    await r.wake()
    assert r.served == ["requeued"]
    assert sum(q.wait_s[BATCH].counts) == 1  # one wait per request, however often queued
    await r.wake()
    assert r.served == ["requeued", "b-later"]
    await task
    await r.close()


async def test_requeue_is_not_refused_by_a_full_queue() -> None:
    q = queue(1)
    got: list[str] = []

    async def requeuer() -> None:
        with q.place("t", INTERACTIVE) as place:
            await place.wait(FAR)
            got.append("woken")
            q_full = asyncio.create_task(other())
            await settle()
            await place.wait(FAR)  # the queue is full now; this one held a place
            got.append("served")
            await q_full

    async def other() -> None:
        with q.place("t", INTERACTIVE) as place:
            await place.wait(FAR)
            got.append("other")

    task = asyncio.create_task(requeuer())
    await settle()
    q.wake()
    await settle()
    await settle()
    assert got == ["woken"] and len(q) == 2
    q.wake()
    await settle()
    q.wake()
    await settle()
    await task
    assert got == ["woken", "served", "other"]


async def test_tenant_weights_come_from_the_weight_lookup() -> None:
    q = queue(100, weights={"gold": 3.0})
    r = Runner(q)
    for i in range(30):
        await r.add(f"g{i}", BATCH, tenant="gold")
        await r.add(f"p{i}", BATCH, tenant="plain")
    await r.wake(20)
    gold = sum(1 for name in r.served if name.startswith("g"))
    assert gold == 15, r.served  # 3:1 shares of equal-cost requests
    await r.close()


@pytest.mark.parametrize("make", [
    lambda q: q.place(), lambda q: q.place("x", SHEDDABLE, 0)])
async def test_an_unused_place_counts_nothing(make: Callable[[CapacityQueue], Place]) -> None:
    q = queue()
    with make(q):
        pass
    assert all(sum(h.counts) == 0 for h in q.wait_s.values())


async def test_a_wake_up_goes_to_the_first_waiter_whose_model_has_room() -> None:
    """One queue serves every model: a slot freed for model a must not be taken (and
    lost) by a higher waiter for model b whose workers are all still busy."""
    full = {"b"}
    q = CapacityQueue(10, 60.0, has_room=lambda model, route: model not in full,
                      clock=Clock())
    served: list[str] = []

    async def wait(name: str, model: str, klass: str) -> None:
        with q.place("t", klass, 1.0, model, "/chat/completions") as place:
            await place.wait(FAR)
        served.append(name)

    tasks = [asyncio.create_task(wait("b-interactive", "b", INTERACTIVE))]
    await settle()
    tasks.append(asyncio.create_task(wait("a-batch", "a", BATCH)))
    await settle()
    q.wake()
    await settle()
    assert served == ["a-batch"] and len(q) == 1  # b keeps its place
    q.wake()  # nothing for b yet: nobody is woken
    await settle()
    assert served == ["a-batch"] and len(q) == 1
    full.clear()
    q.wake()
    await settle()
    assert served == ["a-batch", "b-interactive"]
    await asyncio.gather(*tasks)


def test_pop_with_a_filter_keeps_the_passed_over_in_order() -> None:
    order = FairOrder(30.0)
    ws = [order.waiter("t", INTERACTIVE, 1.0, 1.0, 0.0) for _ in range(4)]
    for w in ws:
        order.push(w, 0.0)
    assert order.pop(0.0, lambda w: w is ws[2]) is ws[2]
    assert order.pop(0.0, lambda w: False) is None
    assert [order.pop(0.0) for _ in range(3)] == [ws[0], ws[1], ws[3]]
