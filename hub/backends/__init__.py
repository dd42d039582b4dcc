"""One adapter per worker kind: how to send it requests (the URL for an OpenAI route,
extra headers such as an API key, and a translator where the worker does not speak
the OpenAI API). Probing a worker is :mod:`hub.probing`'s. Adapters do no I/O; they
must not import the fleet, the forwarding loop or aiohttp."""

from __future__ import annotations

from hub.backends.base import Backend
from hub.backends.llamacpp import LlamaCppBackend
from hub.backends.ollama import OllamaBackend
from hub.backends.openai import OpenAIBackend

_BACKENDS: dict[str, Backend] = {
    "llamacpp": LlamaCppBackend(),
    "openai": OpenAIBackend(),
    "ollama": OllamaBackend(),
}


def backend_for(kind: str) -> Backend:
    try:
        return _BACKENDS[kind]
    except KeyError:
        raise ValueError(f"no backend for worker kind {kind!r}") from None


__all__ = ["Backend", "backend_for"]
