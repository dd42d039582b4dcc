from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.fleet.registry import Worker


class RoundRobin:
    """Health-filtered round robin: the caller passes only routable candidates."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Worker], *,
             model: str | None = None) -> Worker | None:
        if not candidates:
            return None
        i = self._next % len(candidates)
        self._next = i + 1
        return candidates[i]
