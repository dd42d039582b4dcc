from __future__ import annotations

import os
from typing import Protocol

from hub.config.workers import WorkerSpec


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class Translator(Protocol):
    """Speaks a worker's own API for one call: the route's body in, the route's answer
    out (OpenAI's for OpenAI routes, Ollama's for Ollama's API at the hub)."""

    path: str  # appended to the worker's URL; read after request(), which may set it

    def request(self, body: bytes) -> bytes: ...

    def response(self, status: int, body: bytes) -> bytes: ...

    def stream(self) -> StreamTranslator: ...


class Backend(Protocol):
    kind: str

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        """Upstream URL for an OpenAI route such as ``/chat/completions``."""
        ...

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        """Extra headers for upstream requests and probes (e.g. an API key)."""
        ...

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        """None when the worker speaks the OpenAI API for ``route`` (bytes pass through)."""
        ...


def api_key_headers(spec: WorkerSpec) -> dict[str, str]:
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if key:
            return {"Authorization": f"Bearer {key}"}
    return {}
