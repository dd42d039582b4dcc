"""Any OpenAI-compatible upstream; ``url`` is its base URL including ``/v1``."""

from __future__ import annotations

import aiohttp

from hub.backends.base import Translator, api_key_headers, openai_model_ids
from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult


class OpenAIBackend:
    kind = "openai"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        return f"{spec.url}{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return api_key_headers(spec)

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        return None

    async def probe(self, session: aiohttp.ClientSession, spec: WorkerSpec,
                    timeout: aiohttp.ClientTimeout) -> ProbeResult:
        models = await openai_model_ids(session, f"{spec.url}/models", timeout,
                                        api_key_headers(spec))
        if models is None:
            return ProbeResult(healthy=False, detail="GET /models failed")
        return ProbeResult(healthy=True, detail="ok", models=models)
