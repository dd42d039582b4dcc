"""llama.cpp ``llama-server``: requests go to its OpenAI API under ``/v1``."""

from __future__ import annotations

from hub.backends.base import Translator
from hub.config.workers import WorkerSpec


class LlamaCppBackend:
    kind = "llamacpp"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        return f"{spec.url}/v1{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return {}

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        return None
