from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hub.fleet.registry import Worker


class Policy(Protocol):
    """Chooses one worker among candidates that are already healthy and serve the model."""

    name: str

    def pick(self, candidates: Sequence[Worker], *,
             model: str | None = None) -> Worker | None:
        """``model``: the one the request asks for, for per-model statistics."""
        ...
