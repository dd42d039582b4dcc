"""llama.cpp ``llama-server``: /health (503 while loading), /v1/models, /v1/* for requests."""

from __future__ import annotations

import aiohttp

from hub.backends.base import Translator, openai_model_ids
from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult


class LlamaCppBackend:
    kind = "llamacpp"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        return f"{spec.url}/v1{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return {}

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        return None

    async def probe(self, session: aiohttp.ClientSession, spec: WorkerSpec,
                    timeout: aiohttp.ClientTimeout) -> ProbeResult:
        try:
            async with session.get(f"{spec.url}/health", timeout=timeout) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ProbeResult(healthy=False, detail=f"health: {type(exc).__name__}")
        if status == 503:
            return ProbeResult(healthy=False, detail="loading model")
        if status != 200:
            return ProbeResult(healthy=False, detail=f"health: HTTP {status}")
        models = await openai_model_ids(session, f"{spec.url}/v1/models", timeout)
        return ProbeResult(healthy=True, detail="ok", models=models)
