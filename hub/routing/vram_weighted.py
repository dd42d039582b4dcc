"""Smooth weighted round robin, weighted by free VRAM (nginx's algorithm).

Each pick adds every candidate's weight to its running ``current`` score, takes the
highest, and subtracts the total weight from the winner. Over time each worker gets its
weight's share, interleaved rather than in runs (weights 5:1:1 give a a b a c a a, not
a a a a a b c). Scores are kept per worker name, so they survive candidates coming and
going between picks.

Weight, in MB-equivalents: the worker's free VRAM when its agent reports it; else its
free slots times ``slot_weight_mb``; else ``default_weight_mb``. A worker with weight 0
(no free VRAM or no free slot) is only picked when every candidate has weight 0, and then
they share evenly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.config.kit import Section
from hub.routing import load

if TYPE_CHECKING:
    from hub.fleet.registry import Worker


@dataclass(frozen=True, slots=True)
class VramWeightedConfig:
    default_weight_mb: float = 4096.0  # a worker that reports neither VRAM nor slots
    slot_weight_mb: float = 1024.0  # one free slot counts as this much free VRAM


class VramWeighted:
    name = "vram_weighted"

    def __init__(self, cfg: VramWeightedConfig | None = None) -> None:
        self.cfg = cfg or VramWeightedConfig()
        self._current: dict[str, float] = {}

    def weight(self, w: Worker) -> float:
        vram = load.vram_free_mb(w)
        if vram is not None:
            return vram
        slots = load.free_slots(w)
        if slots is not None:
            return slots * self.cfg.slot_weight_mb
        return self.cfg.default_weight_mb

    def pick(self, candidates: Sequence[Worker], *,
             model: str | None = None) -> Worker | None:
        if not candidates:
            return None
        weighted = [(w, self.weight(w)) for w in candidates]
        if any(weight > 0 for _, weight in weighted):
            weighted = [(w, weight) for w, weight in weighted if weight > 0]
        else:
            weighted = [(w, 1.0) for w, _ in weighted]
        total = 0.0
        best: Worker | None = None
        best_score = 0.0
        for w, weight in weighted:
            score = self._current.get(w.name, 0.0) + weight
            self._current[w.name] = score
            total += weight
            if best is None or score > best_score:
                best, best_score = w, score
        assert best is not None
        self._current[best.name] = best_score - total
        return best

    def forget(self, name: str) -> None:
        """Drop a removed worker's score."""
        self._current.pop(name, None)

    def __repr__(self) -> str:
        return (f"<VramWeighted default_weight_mb={self.cfg.default_weight_mb:g} "
                f"slot_weight_mb={self.cfg.slot_weight_mb:g} workers={len(self._current)}>")


def parse_vram_weighted(raw: object, path: str) -> VramWeightedConfig:
    """Parse ``routing.vram_weighted`` (None means all defaults); errors name the key."""

    s = Section(raw, path)
    d = VramWeightedConfig()
    cfg = VramWeightedConfig(
        default_weight_mb=s.number("default_weight_mb", d.default_weight_mb),
        slot_weight_mb=s.number("slot_weight_mb", d.slot_weight_mb),
    )
    s.done()
    return cfg
