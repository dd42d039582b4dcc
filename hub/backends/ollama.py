"""Ollama: requests go to its OpenAI layer under ``/v1``, or with ``api: native`` (an
Ollama without ``/v1``) chat goes to ``/api/chat`` through a translator. Ollama's own
API at the hub (``/api/chat``, ...) goes to the same route, unchanged."""

from __future__ import annotations

from hub.backends.base import Translator, api_key_headers
from hub.backends.ollama_api import NativeOllama
from hub.backends.ollama_native import NativeChat
from hub.config.workers import OLLAMA_API_ROUTES, WorkerSpec


class OllamaBackend:
    kind = "ollama"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        if route in OLLAMA_API_ROUTES:
            return f"{spec.url}{route}"
        return f"{spec.url}/v1{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return api_key_headers(spec)

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        if route in OLLAMA_API_ROUTES:
            return NativeOllama(route)  # passed through, its stream checked line by line
        if spec.api == "native" and route == "/chat/completions":
            return NativeChat()
        return None
