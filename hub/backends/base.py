from __future__ import annotations

import os
from typing import Protocol

import aiohttp

from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class Translator(Protocol):
    """Speaks a worker's own API for one call: OpenAI body in, OpenAI answer out."""

    path: str

    def request(self, body: bytes) -> bytes: ...

    def response(self, status: int, body: bytes) -> bytes: ...

    def stream(self) -> StreamTranslator: ...


class Backend(Protocol):
    kind: str

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        """Upstream URL for an OpenAI route such as ``/chat/completions``."""
        ...

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        """Extra headers for upstream requests (e.g. an API key)."""
        ...

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        """None when the worker speaks the OpenAI API for ``route`` (bytes pass through)."""
        ...

    async def probe(self, session: aiohttp.ClientSession, spec: WorkerSpec,
                    timeout: aiohttp.ClientTimeout) -> ProbeResult:
        ...


def api_key_headers(spec: WorkerSpec) -> dict[str, str]:
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if key:
            return {"Authorization": f"Bearer {key}"}
    return {}


async def openai_model_ids(session: aiohttp.ClientSession, url: str,
                           timeout: aiohttp.ClientTimeout,
                           headers: dict[str, str] | None = None) -> frozenset[str] | None:
    """Model ids from an OpenAI-style ``GET /models``; None when it cannot be read."""
    try:
        async with session.get(url, timeout=timeout, headers=headers) as resp:
            if resp.status != 200:
                return None
            doc = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    return frozenset(str(m["id"]) for m in data if isinstance(m, dict) and m.get("id"))
