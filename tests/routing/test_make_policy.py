from __future__ import annotations

import random

import pytest

from hub.config.schema import ROUTING_POLICIES
from hub.config.workers import WorkerSpec
from hub.fleet.registry import Worker
from hub.routing import (
    LeastLoaded,
    RoundRobin,
    VramWeighted,
    VramWeightedConfig,
    make_policy,
)


def test_every_configurable_policy_is_built() -> None:
    for name in ROUTING_POLICIES:
        assert make_policy(name).name == name
    assert isinstance(make_policy("round_robin"), RoundRobin)
    assert isinstance(make_policy("least_loaded"), LeastLoaded)


def test_options_and_rng_are_passed_through() -> None:
    cfg = VramWeightedConfig(default_weight_mb=1.0)
    policy = make_policy("vram_weighted", vram_weighted=cfg)
    assert isinstance(policy, VramWeighted)
    assert policy.cfg is cfg
    ws = [Worker(spec=WorkerSpec(name=n, url=f"http://{n}"), healthy=True) for n in "abcd"]
    picks = [make_policy("least_loaded", rng=random.Random(3)).pick(ws) for _ in range(2)]
    assert picks[0] is picks[1]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown routing policy 'fastest'"):
        make_policy("fastest")
