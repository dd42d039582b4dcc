"""What one probe learned about a worker: the type the hub's registry and the agent share."""

from __future__ import annotations

from dataclasses import dataclass

# Model names as the worker lists them (a tuple, in its order); a frozenset is as good
# for the registry, which only asks whether a model is among them.
Names = tuple[str, ...] | frozenset[str]


@dataclass(slots=True, frozen=True)
class ProbeResult:
    """What one active probe learned about a worker.

    ``None`` means "unknown this round": the registry keeps what it had.
    """

    healthy: bool
    detail: str = ""
    models: Names | None = None  # every model it can serve
    slots_total: int | None = None
    slots_busy: int | None = None
    loaded_models: Names | None = None  # in memory now (Ollama /api/ps, llama.cpp router)
    vram_used_bytes: int | None = None  # VRAM held by the loaded models (Ollama)
    reachable: bool = True  # False: no HTTP answer at all (refused, timed out, ...)
    version: str | None = None  # the server's own version, where it says (Ollama)
