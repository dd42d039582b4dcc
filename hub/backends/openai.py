"""Any OpenAI-compatible upstream; ``url`` is its base URL including ``/v1``. The routes
it takes are its ``routes:`` (default: chat, completions, embeddings); Ollama's API at
the hub reaches it through a translator."""

from __future__ import annotations

from hub.backends.base import Translator, api_key_headers
from hub.backends.ollama_api import OllamaOverOpenAI
from hub.config.workers import OLLAMA_API_ROUTES, WorkerSpec


class OpenAIBackend:
    kind = "openai"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        return f"{spec.url}{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return api_key_headers(spec)

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        if route in OLLAMA_API_ROUTES:
            return OllamaOverOpenAI(route, "", llamacpp=False)
        return None
