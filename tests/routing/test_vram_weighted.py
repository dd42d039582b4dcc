from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from itertools import groupby

import pytest

from hub.config.schema import ConfigError
from hub.fleet.registry import Worker
from hub.routing.vram_weighted import VramWeighted, VramWeightedConfig, parse_vram_weighted
from tests.routing.support import pick_names, worker


def _w(name: str, vram_mb: float | None = None, **fields: object) -> Worker:
    return worker(name, vram_free_mb=vram_mb, **fields)


def _names(policy: VramWeighted, candidates: Sequence[Worker], n: int) -> list[str]:
    return pick_names(policy, candidates, n)


def _assert_split(picks: list[str], weights: dict[str, float], tolerance: float = 0.05) -> None:
    total = sum(weights.values())
    counts = Counter(picks)
    for name, weight in weights.items():
        expected = len(picks) * weight / total
        assert abs(counts[name] - expected) <= tolerance * expected, (name, counts, expected)


def test_split_follows_free_vram_with_default_for_unknown() -> None:
    policy = VramWeighted(VramWeightedConfig(default_weight_mb=4096))
    ws = [_w("big", 24 * 1024), _w("small", 8 * 1024), _w("nodata")]
    picks = _names(policy, ws, 1000)
    _assert_split(picks, {"big": 24576, "small": 8192, "nodata": 4096})


def test_split_holds_while_candidate_lists_change_order() -> None:
    policy = VramWeighted()
    ws = [_w("big", 24 * 1024), _w("small", 8 * 1024), _w("nodata")]
    rng = random.Random(7)
    picks = []
    for _ in range(1000):
        order = ws[:]
        rng.shuffle(order)
        w = policy.pick(order)
        assert w is not None
        picks.append(w.name)
    _assert_split(picks, {"big": 24576, "small": 8192, "nodata": 4096})


def test_scores_survive_a_worker_leaving_and_returning() -> None:
    policy = VramWeighted()
    a, b, c = _w("a", 1000), _w("b", 1000), _w("c", 2000)
    picks = _names(policy, [a, b, c], 40)
    picks += _names(policy, [a, c], 30)  # b drained for a while
    picks += _names(policy, [c, b, a], 40)
    _assert_split(picks[-40:], {"a": 1, "b": 1, "c": 2}, tolerance=0.0)
    assert "b" not in picks[40:70]


def test_equal_weights_interleave_without_runs() -> None:
    policy = VramWeighted()
    ws = [_w("a", 8192), _w("b", 8192), _w("c", 8192)]
    picks = _names(policy, ws, 300)
    assert max(len(list(run)) for _, run in groupby(picks)) == 1
    assert Counter(picks) == {"a": 100, "b": 100, "c": 100}


def test_unequal_weights_are_spread_out() -> None:
    policy = VramWeighted()
    picks = _names(policy, [_w("a", 5), _w("b", 1), _w("c", 1)], 7)
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]


def test_slot_headroom_when_no_vram_data() -> None:
    policy = VramWeighted()
    ws = [_w("roomy", slots_total=8, slots_busy=2), _w("tight", slots_total=4, in_flight=0),
          _w("full", slots_total=2, slots_busy=2)]
    picks = _names(policy, ws, 1000)
    _assert_split(picks, {"roomy": 6, "tight": 4})
    assert "full" not in picks


def test_all_zero_weights_share_evenly() -> None:
    policy = VramWeighted()
    ws = [_w("a", 0.0), _w("b", slots_total=1, slots_busy=1)]
    assert Counter(_names(policy, ws, 10)) == {"a": 5, "b": 5}


def test_empty_single_forget_repr() -> None:
    policy = VramWeighted()
    assert policy.pick([]) is None
    a = _w("a", 10)
    assert policy.pick([a]) is a
    assert repr(policy) == ("<VramWeighted default_weight_mb=4096 slot_weight_mb=1024 "
                            "workers=1>")
    policy.forget("a")
    assert "workers=0" in repr(policy)


def test_parse() -> None:
    assert parse_vram_weighted(None, "routing.vram_weighted") == VramWeightedConfig()
    assert parse_vram_weighted({"default_weight_mb": 1000, "slot_weight_mb": 10}, "r") == \
        VramWeightedConfig(default_weight_mb=1000.0, slot_weight_mb=10.0)
    with pytest.raises(ConfigError, match=r"routing\.vram_weighted\.default_weight_mb: must be "
                                          r"> 0"):
        parse_vram_weighted({"default_weight_mb": 0}, "routing.vram_weighted")
    with pytest.raises(ConfigError, match=r"routing\.vram_weighted\.weight: unknown key"):
        parse_vram_weighted({"weight": 1}, "routing.vram_weighted")
