from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from hub.fleet.registry import Worker
from hub.routing.least_loaded import LeastLoaded
from tests.routing.support import pick_names, worker


def _w(name: str, **fields: object) -> Worker:
    return worker(name, **fields)


def _names(policy: LeastLoaded, candidates: Sequence[Worker], n: int) -> list[str]:
    return pick_names(policy, candidates, n)


def test_of_two_always_the_less_loaded() -> None:
    policy = LeastLoaded(random.Random(1))
    ws = [_w("busy", slots_total=4, in_flight=3), _w("idle", slots_total=4, in_flight=1)]
    assert set(_names(policy, ws, 200)) == {"idle"}


def test_load_is_relative_to_capacity() -> None:
    policy = LeastLoaded(random.Random(2))
    ws = [_w("small", slots_total=2, in_flight=1), _w("big", slots_total=8, in_flight=3)]
    assert set(_names(policy, ws, 50)) == {"big"}  # 3/8 < 1/2


def test_prefers_lower_load_and_never_the_most_loaded() -> None:
    policy = LeastLoaded(random.Random(3))
    ws = [_w(f"w{i}", slots_total=10, in_flight=i) for i in range(4)]
    counts = Counter(_names(policy, ws, 1200))
    assert "w3" not in counts
    assert counts["w0"] > counts["w1"] > counts["w2"] > 0
    assert abs(counts["w0"] - 600) < 60  # w0 wins whenever sampled: 1/2 of the pairs


def test_never_a_full_worker_while_another_has_room() -> None:
    policy = LeastLoaded(random.Random(4))
    # by the hub's own count "full" looks idle, but its agent reports every slot busy
    full = _w("full", slots_total=4, slots_busy=4, in_flight=0)
    unknown = _w("unknown", in_flight=3)  # no slot data: load 3.0, but not known full
    roomy = _w("roomy", slots_total=2, slots_busy=1, in_flight=1)
    assert set(_names(policy, [full, unknown], 100)) == {"unknown"}
    assert "full" not in _names(policy, [full, unknown, roomy], 300)


def test_all_full_still_routes() -> None:
    policy = LeastLoaded(random.Random(5))
    ws = [_w("a", slots_total=1, slots_busy=1, in_flight=3),
          _w("b", slots_total=1, slots_busy=1, in_flight=1)]
    assert set(_names(policy, ws, 50)) == {"b"}


def test_latency_breaks_ties() -> None:
    policy = LeastLoaded(random.Random(6))
    ws = [_w("slow", slots_total=4, in_flight=1, ewma_latency_s=2.0),
          _w("fast", slots_total=4, in_flight=1, ewma_latency_s=0.5)]
    assert set(_names(policy, ws, 100)) == {"fast"}
    fresh = _w("fresh", slots_total=4, in_flight=1)  # no latency yet: gets tried
    assert set(_names(policy, [ws[1], fresh], 100)) == {"fresh"}


def test_equal_workers_share_and_seed_repeats() -> None:
    ws = [_w("a"), _w("b"), _w("c")]
    first = _names(LeastLoaded(random.Random(9)), ws, 300)
    assert _names(LeastLoaded(random.Random(9)), ws, 300) == first
    counts = Counter(first)
    assert set(counts) == {"a", "b", "c"}
    assert all(70 <= c <= 130 for c in counts.values())


def test_empty_single_repr() -> None:
    policy = LeastLoaded(random.Random(0))
    assert policy.pick([]) is None
    a = _w("a", slots_total=1, slots_busy=1)
    assert policy.pick([a]) is a
    assert repr(policy) == "<LeastLoaded choices=2>"
