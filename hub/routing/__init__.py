"""Routing policies: pure, sync choices over a list of candidate workers."""

from __future__ import annotations

import random

from hub.routing.base import Policy
from hub.routing.cache_aware import CacheAware, CacheAwareConfig, parse_cache_aware
from hub.routing.least_loaded import LeastLoaded
from hub.routing.request import Choice, RouteRequest
from hub.routing.round_robin import RoundRobin
from hub.routing.vram_weighted import VramWeighted, VramWeightedConfig


def make_policy(name: str, *, rng: random.Random | None = None,
                vram_weighted: VramWeightedConfig | None = None,
                cache_aware: CacheAwareConfig | None = None) -> Policy:
    """Build the policy named in ``routing.policy``; ``rng`` seeds randomised policies."""
    if name == "round_robin":
        return RoundRobin()
    if name == "vram_weighted":
        return VramWeighted(vram_weighted)
    if name == "least_loaded":
        return LeastLoaded(rng)
    if name == "cache_aware":
        return CacheAware(cache_aware, rng=rng)
    raise ValueError(f"unknown routing policy {name!r}")


__all__ = ["CacheAware", "CacheAwareConfig", "Choice", "LeastLoaded", "Policy", "RoundRobin",
           "RouteRequest", "VramWeighted", "VramWeightedConfig", "make_policy",
           "parse_cache_aware"]
