"""Ollama: /api/version for health, /api/tags and /api/ps for models, /v1/* for requests.

Installed models (``/api/tags``) are what the worker can serve; loaded ones
(``/api/ps``) answer without a load delay, and their ``size_vram`` is the VRAM in use.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from hub.backends.base import Translator, api_key_headers
from hub.backends.ollama_native import NativeChat
from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult


class _Unavailable(Exception):
    """A probe endpoint gave no usable answer; the message says why, briefly."""


async def _get_json(session: aiohttp.ClientSession, url: str, timeout: aiohttp.ClientTimeout,
                    headers: dict[str, str]) -> Any:
    try:
        async with session.get(url, timeout=timeout, headers=headers) as resp:
            if resp.status != 200:
                await resp.read()
                raise _Unavailable(f"HTTP {resp.status}")
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Unavailable(type(exc).__name__) from exc
    except ValueError as exc:
        raise _Unavailable("not JSON") from exc


def _model_entries(doc: Any) -> list[dict[str, Any]]:
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise _Unavailable("no models list")
    return [m for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)
            and m["name"]]


async def _installed(session: aiohttp.ClientSession, base: str, timeout: aiohttp.ClientTimeout,
                     headers: dict[str, str]) -> frozenset[str] | None:
    try:
        doc = await _get_json(session, f"{base}/api/tags", timeout, headers)
        return frozenset(m["name"] for m in _model_entries(doc))
    except _Unavailable:
        return None


async def _loaded(session: aiohttp.ClientSession, base: str, timeout: aiohttp.ClientTimeout,
                  headers: dict[str, str]) -> tuple[frozenset[str] | None, int | None]:
    try:
        entries = _model_entries(await _get_json(session, f"{base}/api/ps", timeout, headers))
    except _Unavailable:
        return None, None
    vram = sum(m["size_vram"] for m in entries
               if isinstance(m.get("size_vram"), int) and not isinstance(m["size_vram"], bool))
    return frozenset(m["name"] for m in entries), vram


class OllamaBackend:
    kind = "ollama"

    def request_url(self, spec: WorkerSpec, route: str) -> str:
        return f"{spec.url}/v1{route}"

    def request_headers(self, spec: WorkerSpec) -> dict[str, str]:
        return api_key_headers(spec)

    def translator(self, spec: WorkerSpec, route: str) -> Translator | None:
        if spec.api == "native" and route == "/chat/completions":
            return NativeChat()
        return None

    async def probe(self, session: aiohttp.ClientSession, spec: WorkerSpec,
                    timeout: aiohttp.ClientTimeout) -> ProbeResult:
        headers = api_key_headers(spec)
        try:
            doc = await _get_json(session, f"{spec.url}/api/version", timeout, headers)
        except _Unavailable as exc:
            return ProbeResult(healthy=False, detail=f"version: {exc}")
        version = doc.get("version") if isinstance(doc, dict) else None
        if not isinstance(version, str):
            return ProbeResult(healthy=False, detail="version: not an Ollama answer")
        models, (loaded, vram) = await asyncio.gather(
            _installed(session, spec.url, timeout, headers),
            _loaded(session, spec.url, timeout, headers))
        return ProbeResult(healthy=True, detail=f"ok (ollama {version})", models=models,
                           loaded_models=loaded, vram_used_bytes=vram)
