"""llama.cpp ``llama-server``: requests go to its OpenAI API under ``/v1`` (and its
Anthropic and Responses routes there too), ``/tokenize`` and ``/detokenize`` to its
own root, and Ollama's API through a translator to the OpenAI routes."""

from __future__ import annotations

from hub.backends.base import Translator
from hub.backends.ollama_api import OllamaOverOpenAI
from hub.config.workers import OLLAMA_API_ROUTES, WorkerSpec

ROOT_ROUTES = frozenset({"/tokenize", "/detokenize"})  # llama-server's, not below /v1


class LlamaCppBackend:
    kind = "llamacpp"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        if route in ROOT_ROUTES:
            return f"{spec.url}{route}"
        return f"{spec.url}/v1{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return {}

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        if route in OLLAMA_API_ROUTES:
            return OllamaOverOpenAI(route, "/v1", llamacpp=True)
        return None
