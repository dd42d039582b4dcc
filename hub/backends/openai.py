"""Any OpenAI-compatible upstream; ``url`` is its base URL including ``/v1``."""

from __future__ import annotations

from hub.backends.base import Translator, api_key_headers
from hub.config.workers import WorkerSpec


class OpenAIBackend:
    kind = "openai"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        return f"{spec.url}{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return api_key_headers(spec)

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        return None
