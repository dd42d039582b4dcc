from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.config.schema import ConfigError
from hub.resilience.outlier import (
    LatencyStat,
    OutlierConfig,
    OutlierDetector,
    ejection_cap,
    find_outliers,
    parse_outlier,
)

CFG = OutlierConfig()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _stats(*ewmas: float | None, samples: int = 50) -> list[LatencyStat]:
    return [LatencyStat(f"w{i}", e, samples) for i, e in enumerate(ewmas)]


def test_ejects_worker_far_slower_than_peer_median() -> None:
    assert find_outliers(_stats(1.0, 1.2, 0.9, 5.0), set(), CFG) == ["w3"]
    assert find_outliers(_stats(1.0, 1.2, 0.9, 2.9), set(), CFG) == []


def test_needs_min_samples_and_peers() -> None:
    stats = [*_stats(1.0, 1.0), LatencyStat("slow", 9.0, CFG.min_samples - 1)]
    assert find_outliers(stats, set(), CFG) == []
    stats = [*_stats(1.0, 1.0), LatencyStat("slow", 9.0, CFG.min_samples)]
    assert find_outliers(stats, set(), CFG) == ["slow"]
    # peers without enough samples do not count as a baseline
    assert find_outliers([LatencyStat("a", 1.0, 1), LatencyStat("b", 9.0, 50)], set(),
                         CFG) == []


def test_absolute_floor() -> None:
    assert find_outliers(_stats(0.05, 0.05, 0.4), set(), CFG) == []
    assert find_outliers(_stats(0.05, 0.05, 0.4), set(),
                         OutlierConfig(min_latency_s=0.0)) == ["w2"]


def test_never_ejects_the_last_worker() -> None:
    one_cfg = OutlierConfig(max_ejected_fraction=1.0)
    assert find_outliers(_stats(60.0), set(), one_cfg) == []
    assert find_outliers(_stats(1.0, 10.0), set(), one_cfg) == ["w1"]
    # the other one is now the last worker in: nothing left to compare with, or to spare
    assert find_outliers(_stats(1.0, 10.0), {"w1"}, one_cfg) == []
    # unhealthy peers do not count as spare capacity
    stats = [LatencyStat("a", 1.0, 50, healthy=False), *_stats(1.0, 10.0)]
    assert find_outliers(stats, {"w0"}, one_cfg) == []


def test_caps_ejections_at_fraction_worst_first() -> None:
    stats = _stats(1.0, 1.0, 10.0, 12.0)
    assert find_outliers(stats, set(), OutlierConfig(max_ejected_fraction=0.25)) == ["w3"]
    assert find_outliers(stats, set(), OutlierConfig(max_ejected_fraction=0.5)) == ["w3", "w2"]
    assert find_outliers(stats, {"w3"}, OutlierConfig(max_ejected_fraction=0.25)) == []
    assert find_outliers(stats, set(), OutlierConfig(max_ejected_fraction=0.0)) == []


@pytest.mark.parametrize(("size", "fraction", "cap"), [
    (0, 0.5, 0), (1, 1.0, 0), (2, 0.5, 1), (3, 0.5, 1), (4, 0.5, 2), (10, 0.3, 3),
    (3, 1.0, 2),
])
def test_ejection_cap(size: int, fraction: float, cap: int) -> None:
    assert ejection_cap(size, OutlierConfig(max_ejected_fraction=fraction)) == cap


@given(
    ewmas=st.lists(st.one_of(st.none(), st.floats(0.0, 100.0)), min_size=0, max_size=12),
    healthy=st.lists(st.booleans(), min_size=12, max_size=12),
    ejected=st.lists(st.booleans(), min_size=12, max_size=12),
    fraction=st.floats(0.0, 1.0),
)
def test_invariants_hold_for_any_pool(ewmas: list[float | None], healthy: list[bool],
                                      ejected: list[bool], fraction: float) -> None:
    cfg = OutlierConfig(max_ejected_fraction=fraction, min_latency_s=0.0)
    stats = [LatencyStat(f"w{i}", e, 50, healthy[i]) for i, e in enumerate(ewmas)]
    out = {s.name for s, gone in zip(stats, ejected, strict=False) if gone}
    new = find_outliers(stats, out, cfg)
    assert len(new) == len(set(new))
    assert not set(new) & out
    active_before = [s for s in stats if s.healthy and s.name not in out]
    active_after = [s for s in active_before if s.name not in new]
    if active_before:
        assert active_after, "ejected the last healthy worker"
    if new:
        assert len(out) + len(new) <= ejection_cap(len(stats), cfg)


def test_detector_ejects_for_growing_time_and_readmits() -> None:
    clock = FakeClock()
    det = OutlierDetector(OutlierConfig(eject_s=30, max_eject_s=50, min_samples=10), clock)
    assert det.update(_stats(1.0, 1.0, 9.0, samples=10)) == ["w2"]
    assert det.is_ejected("w2")
    assert det.ejected() == {"w2"}
    clock.now += 29.9
    assert det.update(_stats(1.0, 1.0, 9.0, samples=10)) == []
    assert det.is_ejected("w2")
    clock.now += 0.1
    # back in; its stale EWMA is not held against it until 10 new samples arrive
    assert det.update([*_stats(1.0, 1.0), LatencyStat("w2", 9.0, 19)]) == []
    assert not det.is_ejected("w2")
    assert det.update([*_stats(1.0, 1.0), LatencyStat("w2", 9.0, 20)]) == ["w2"]
    assert det.snapshot()["w2"] == {"ejected": True, "ejected_for_s": 50.0, "ejections": 2}
    clock.now += 50
    assert det.update([*_stats(1.0, 1.0), LatencyStat("w2", 9.0, 30)]) == ["w2"]
    assert det.snapshot()["w2"]["ejected_for_s"] == 50.0  # capped at max_eject_s


def test_detector_multiplier_decays_on_fresh_good_samples() -> None:
    clock = FakeClock()
    det = OutlierDetector(OutlierConfig(eject_s=30, min_samples=10), clock)
    det.update(_stats(1.0, 1.0, 9.0, samples=10))
    clock.now += 30
    det.update([*_stats(1.0, 1.0), LatencyStat("w2", 1.0, 15)])  # too few new samples
    assert det.snapshot()["w2"]["ejections"] == 1
    det.update([*_stats(1.0, 1.0), LatencyStat("w2", 1.0, 20)])
    assert det.snapshot()["w2"]["ejections"] == 0
    assert det.update([*_stats(1.0, 1.0), LatencyStat("w2", 9.0, 40)]) == ["w2"]
    assert det.snapshot()["w2"]["ejected_for_s"] == 30.0


def test_detector_admit_never_empties_candidates() -> None:
    class W:
        def __init__(self, name: str) -> None:
            self.name = name

    det = OutlierDetector(OutlierConfig(max_ejected_fraction=1.0), FakeClock())
    det.update(_stats(1.0, 9.0))
    a, b = W("w0"), W("w1")
    assert det.admit([a, b]) == [a]
    assert det.admit([b]) == [b]  # all ejected: better a slow worker than none
    assert repr(det) == "<OutlierDetector factor=3 ejected=w1>"
    det.forget("w1")
    assert det.admit([a, b]) == [a, b]


def test_detector_survives_counter_restart() -> None:
    clock = FakeClock()
    det = OutlierDetector(OutlierConfig(eject_s=1), clock)
    det.update(_stats(1.0, 1.0, 9.0, samples=100))
    clock.now += 1
    assert det.update([*_stats(1.0, 1.0), LatencyStat("w2", 9.0, 10)]) == ["w2"]


def test_parse_defaults_values_and_errors() -> None:
    assert parse_outlier(None, "resilience.outlier") == OutlierConfig()
    assert parse_outlier({"factor": 2, "max_ejected_fraction": 0}, "o") == OutlierConfig(
        factor=2.0, max_ejected_fraction=0.0)
    with pytest.raises(ConfigError, match=r"resilience\.outlier\.factor: must be > 1"):
        parse_outlier({"factor": 1}, "resilience.outlier")
    with pytest.raises(ConfigError, match=r"resilience\.outlier\.max_ejected_fraction: must "
                                          r"be <= 1"):
        parse_outlier({"max_ejected_fraction": 2}, "resilience.outlier")
    with pytest.raises(ConfigError, match=r"resilience\.outlier\.max_eject_s: must be >="):
        parse_outlier({"eject_s": 60, "max_eject_s": 30}, "resilience.outlier")
    with pytest.raises(ConfigError, match=r"resilience\.outlier\.min_sample: unknown key"):
        parse_outlier({"min_sample": 3}, "resilience.outlier")
