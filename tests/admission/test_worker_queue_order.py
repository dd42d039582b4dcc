"""FairOrder: who the worker queue lets go next (classes, aging, fairness, shedding)."""

from __future__ import annotations

from collections import Counter

import pytest

from hub.admission.fair_order import IDLE_TAGS, FairOrder, Waiter
from hub.admission.priority import BATCH, INTERACTIVE, SHEDDABLE

AGING = 10.0


def add(order: FairOrder, tenant: str, klass: str, now: float, *, cost: float = 100.0,
        weight: float = 1.0) -> Waiter:
    w = order.waiter(tenant, klass, cost, weight, now)
    order.push(w, now)
    return w


def drain(order: FairOrder, now: float) -> list[Waiter]:
    out = []
    while (w := order.pop(now)) is not None:
        out.append(w)
    return out


def test_interactive_goes_before_earlier_batch_and_sheddable_last() -> None:
    order = FairOrder(AGING)
    s1 = add(order, "t", SHEDDABLE, 0.0)
    b1 = add(order, "t", BATCH, 0.0)
    b2 = add(order, "t", BATCH, 0.5)
    i1 = add(order, "t", INTERACTIVE, 1.0)
    i2 = add(order, "t", INTERACTIVE, 1.5)
    assert order.waiting == {INTERACTIVE: 2, BATCH: 2, SHEDDABLE: 1}
    assert drain(order, 2.0) == [i1, i2, b1, b2, s1]
    assert len(order) == 0 and order.waiting == {INTERACTIVE: 0, BATCH: 0, SHEDDABLE: 0}


def test_a_batch_waiter_is_promoted_after_aging_s() -> None:
    """Waited aging_s: it ranks as an interactive arrival of that moment, so it goes
    before interactive requests that arrive later, but after those already waiting."""
    order = FairOrder(AGING)
    b = add(order, "t", BATCH, 0.0)
    early = add(order, "t", INTERACTIVE, 9.0)
    assert order.pop(9.99) is early  # not due yet
    before = add(order, "t", INTERACTIVE, 9.995)
    late = add(order, "t", INTERACTIVE, 10.5)  # promotion happened at this arrival
    assert b.promoted and b.rank == 0
    assert [order.pop(11.0), order.pop(11.0), order.pop(11.0)] == [before, b, late]


def test_promotion_acts_as_at_the_exact_moment_even_if_noticed_later() -> None:
    """No arrival or pick between the batch's due time and now: it still ranks
    before an interactive request that arrives after its due time."""
    order = FairOrder(AGING)
    b = add(order, "t", BATCH, 0.0)
    i = add(order, "t", INTERACTIVE, 25.0)  # arrival at 25 promotes b first
    assert drain(order, 25.0) == [b, i]


def run_stream(aging_s: float, *, backlog: int, seconds: float,
               batch_at: float) -> tuple[float | None, int]:
    """One worker slot, service 1 s; an interactive stream of one tenant keeps
    ``backlog`` requests waiting; one batch request of the same tenant arrives at
    ``batch_at``. Returns when the batch was let go and how many interactive waited
    at its promotion."""
    order = FairOrder(aging_s)
    now = 0.0
    for _ in range(backlog):
        add(order, "t", INTERACTIVE, now)
    batch: Waiter | None = None
    queued_at_promotion = -1
    while now < seconds:
        if batch is None and now >= batch_at:
            batch = add(order, "t", BATCH, now)
        if batch is not None and queued_at_promotion < 0 and now - batch_at >= aging_s:
            queued_at_promotion = order.waiting[INTERACTIVE]
        w = order.pop(now)
        if w is batch:
            return now, queued_at_promotion
        add(order, "t", INTERACTIVE, now)  # the stream refills what was served
        now += 1.0
    return None, queued_at_promotion


@pytest.mark.parametrize("backlog", [1, 3, 8])
def test_batch_completes_within_the_aging_bound_under_a_steady_interactive_stream(
        backlog: int) -> None:
    """Bound: aging_s + (interactive waiters queued at promotion + 1) service times."""
    served_at, ahead = run_stream(AGING, backlog=backlog, seconds=1000.0, batch_at=5.0)
    assert served_at is not None
    assert ahead == backlog
    assert served_at - 5.0 <= AGING + (ahead + 1) * 1.0


def test_without_aging_batch_would_starve_behind_the_stream() -> None:
    served_at, _ = run_stream(1e9, backlog=2, seconds=1000.0, batch_at=5.0)
    assert served_at is None


def test_another_tenants_promoted_batch_goes_before_a_backlogged_tenants_stream() -> None:
    order = FairOrder(AGING)
    for _ in range(5):
        add(order, "busy", INTERACTIVE, 0.0)
    b = add(order, "quiet", BATCH, 0.0)
    assert order.pop(1.0) is not b  # interactive first before aging
    assert order.pop(AGING) is b  # promoted with the class's virtual time: next


def served_tokens(order: FairOrder, pops: int, now: float) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(pops):
        w = order.pop(now)
        assert w is not None
        out[w.tenant] += int(w.cost)
    return out


def test_long_prompts_do_not_buy_a_bigger_share() -> None:
    """Two backlogged tenants of one class: the fleet serves them equal tokens, not
    equal requests."""
    order = FairOrder(AGING)
    for i in range(200):
        add(order, "long", INTERACTIVE, i * 0.001, cost=1000.0)
        add(order, "short", INTERACTIVE, i * 0.001, cost=100.0)
    tokens = served_tokens(order, 110, 1.0)
    assert abs(tokens["long"] - tokens["short"]) <= 1000, tokens
    assert tokens["short"] >= 9000


@pytest.mark.parametrize("weights", [(2.0, 1.0), (3.0, 1.0), (1.0, 1.0)])
def test_weights_set_the_shares(weights: tuple[float, float]) -> None:
    order = FairOrder(AGING)
    wa, wb = weights
    for i in range(300):
        add(order, "a", BATCH, i * 0.001, cost=50.0, weight=wa)
        add(order, "b", BATCH, i * 0.001, cost=50.0, weight=wb)
    tokens = served_tokens(order, 200, 1.0)
    assert tokens["a"] / tokens["b"] == pytest.approx(wa / wb, rel=0.05), tokens


def test_fairness_carries_over_short_queues() -> None:
    """A tenant just served a long request waits behind one that was not, even when
    the queue emptied in between."""
    order = FairOrder(AGING)
    add(order, "long", INTERACTIVE, 0.0, cost=5000.0)
    assert order.pop(0.0) is not None  # served; the class is empty now
    long2 = add(order, "long", INTERACTIVE, 1.0, cost=10.0)
    short = add(order, "short", INTERACTIVE, 1.1, cost=10.0)
    assert drain(order, 2.0) == [short, long2]


def test_classes_are_strict_whatever_the_fair_tags() -> None:
    order = FairOrder(AGING)
    b = add(order, "cheap", BATCH, 0.0, cost=1.0)
    i = add(order, "dear", INTERACTIVE, 0.0, cost=10**9)
    assert drain(order, 1.0) == [i, b]


def test_a_waiter_that_leaves_unserved_gives_its_charge_back() -> None:
    order = FairOrder(AGING)
    gone = add(order, "a", INTERACTIVE, 0.0, cost=1000.0)
    order.remove(gone)
    a2 = add(order, "a", INTERACTIVE, 1.0, cost=10.0)
    b1 = add(order, "b", INTERACTIVE, 1.0, cost=10.0)
    assert drain(order, 2.0) == [a2, b1]  # a's start is not pushed back by the 1000
    order.remove(a2)  # not queued any more: a no-op
    assert len(order) == 0


def test_a_requeued_waiter_stays_first_of_its_class() -> None:
    order = FairOrder(AGING)
    first = add(order, "a", INTERACTIVE, 0.0)
    second = add(order, "b", INTERACTIVE, 0.1)
    assert order.pop(1.0) is first
    later = add(order, "c", INTERACTIVE, 1.5)
    order.push(first, 2.0)  # woken, but another request took the slot
    assert drain(order, 2.0) == [first, second, later]
    order.push(later, 3.0)
    with pytest.raises(ValueError):
        order.push(later, 3.0)


def test_a_requeued_batch_waiter_keeps_its_arrival_for_aging() -> None:
    order = FairOrder(AGING)
    b = add(order, "a", BATCH, 0.0)
    assert order.pop(1.0) is b
    i = add(order, "a", INTERACTIVE, 11.0)
    order.push(b, 11.0)  # back in the queue after 11 s: due already
    assert b.promoted
    assert drain(order, 11.0) == [i, b]  # i arrived (11.0) before b's promotion (11.0)


def test_room_for_sheds_sheddable_first() -> None:
    order = FairOrder(AGING)
    s1 = add(order, "a", SHEDDABLE, 0.0)
    assert order.room_for(SHEDDABLE, 4, 2) == (True, None)
    s2 = add(order, "a", SHEDDABLE, 0.1)
    # at the sheddable threshold: sheddable refused, others still queue
    assert order.room_for(SHEDDABLE, 4, 2) == (False, None)
    assert order.room_for(BATCH, 4, 2) == (True, None)
    add(order, "a", BATCH, 0.2)
    add(order, "a", INTERACTIVE, 0.3)
    # full: a non-sheddable arrival takes the youngest sheddable waiter's place
    assert order.room_for(INTERACTIVE, 4, 2) == (True, s2)
    assert order.room_for(BATCH, 4, 2) == (True, s2)
    assert order.room_for(SHEDDABLE, 4, 10) == (False, None)
    order.remove(s2)
    assert order.youngest_sheddable() is s1
    order.remove(s1)
    add(order, "a", BATCH, 0.4)
    add(order, "a", BATCH, 0.5)
    assert order.room_for(INTERACTIVE, 4, 2) == (False, None)  # nothing to shed
    assert FairOrder(AGING).room_for(INTERACTIVE, 0, 0) == (False, None)


def test_heaps_and_tags_stay_bounded_under_churn() -> None:
    order = FairOrder(1.0)
    now = 0.0
    for i in range(20_000):
        now += 0.01
        w = add(order, f"t{i}", (INTERACTIVE, BATCH, SHEDDABLE)[i % 3], now, cost=i % 97)
        if i % 2:
            order.remove(w)
        else:
            order.pop(now)
    assert len(order) == 0
    sizes = [len(h) for h in order._heaps] + [len(order._aging), len(order._shed)]
    assert max(sizes) <= 2 * 64 + 2, sizes
    assert all(len(f) <= IDLE_TAGS + 2 * 64 for f in order._finish), [
        len(f) for f in order._finish]
