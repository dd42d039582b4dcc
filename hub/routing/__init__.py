"""Routing policies: pure, sync choices over a list of candidate workers."""

from __future__ import annotations

from hub.routing.base import Policy
from hub.routing.round_robin import RoundRobin


def make_policy(name: str) -> Policy:
    if name == "round_robin":
        return RoundRobin()
    raise ValueError(f"unknown routing policy {name!r}")


__all__ = ["Policy", "RoundRobin", "make_policy"]
