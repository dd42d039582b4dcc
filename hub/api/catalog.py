"""What the fleet serves, as the model lists show it: which routes each model is
served on (``/v1/models``' ``spokehub.routes``, ``/api/tags``' and ``/api/show``'s
``capabilities``)."""

from __future__ import annotations

from collections.abc import Iterable

from hub.config.workers import OLLAMA_API_ROUTES, ROUTES
from hub.fleet.registry import Worker

# Public path -> route key, OpenAI's and llama.cpp's, then Ollama's API at the hub.
PATHS: dict[str, str] = {**ROUTES, **{route: route for route in OLLAMA_API_ROUTES}}


def model_routes(workers: Iterable[Worker]) -> list[str]:
    """The paths at the hub on which some worker of ``workers`` takes the model (what the
    hub will send it; whether the model can do it, e.g. embeddings from a generative
    model, only the worker knows)."""
    specs = [w.spec for w in workers]
    return [path for path, route in PATHS.items()
            if any(spec.serves_route(route) for spec in specs)]


def ollama_capabilities(routes: Iterable[str]) -> list[str]:
    """Ollama's ``capabilities`` names for a model served on ``routes``."""
    served = set(routes)
    out = []
    if "/api/chat" in served:
        out.append("completion")
    if "/api/embed" in served:
        out.append("embedding")
    return out
