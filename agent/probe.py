"""Probe local workers: is it up, which models, how many slots are busy.

llama.cpp ``llama-server``: ``/health`` (503 while loading), ``/v1/models``, ``/slots``
(needs ``--slots``; falls back to ``/props`` ``total_slots`` when disabled).
Ollama: ``/api/version``, ``/api/tags`` (installed), ``/api/ps`` (loaded, ``size_vram``).

A probe never raises: anything unexpected becomes an unhealthy status with a detail.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from agent.client import TRANSPORT_ERRORS, describe_error, fetch
from agent.config import WorkerTarget
from hub.upstream import Pool

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    target: WorkerTarget
    reachable: bool
    healthy: bool
    detail: str = "ok"
    models: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    slots_total: int | None = None
    slots_busy: int | None = None
    vram_used_mb: int | None = None  # Ollama: VRAM held by loaded models
    version: str | None = None

    @property
    def name(self) -> str:
        return self.target.name

    def to_json(self, vram_free_mb: int | None) -> dict[str, Any]:
        """The worker entry of a heartbeat (the hub contract's keys, nothing else)."""
        return {"name": self.target.name, "url": self.target.advertise_url,
                "kind": self.target.kind, "models": list(self.models),
                "loaded_models": list(self.loaded_models), "slots_total": self.slots_total,
                "slots_busy": self.slots_busy, "healthy": self.healthy,
                "vram_free_mb": vram_free_mb}


class _Unreachable(Exception):
    pass


async def _get(pool: Pool, url: str, timeout_s: float) -> tuple[int, Any]:
    """(status, parsed JSON or None); _Unreachable when there is no HTTP answer."""
    try:
        status, body = await fetch(pool, "GET", url, timeout_s=timeout_s)
    except TRANSPORT_ERRORS as exc:
        raise _Unreachable(describe_error(exc)) from None
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    return status, doc


# -- llama.cpp -------------------------------------------------------------------------


def parse_llamacpp_models(doc: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(models, loaded) from ``/v1/models``. A server in router mode lists models with a
    ``status``; only ``loaded`` ones count as loaded. Plain servers: all are loaded."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    models: list[str] = []
    loaded: list[str] = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        models.append(entry["id"])
        status = entry.get("status")
        value = status.get("value") if isinstance(status, dict) else status
        if value is None or value == "loaded":
            loaded.append(entry["id"])
    return tuple(models), tuple(loaded)


def parse_llamacpp_slots(doc: Any) -> tuple[int, int] | None:
    """(total, busy) from ``/slots``: busy = ``is_processing`` (older: ``state`` != 0)."""
    if not isinstance(doc, list):
        return None
    busy = 0
    for slot in doc:
        if not isinstance(slot, dict):
            continue
        if "is_processing" in slot:
            busy += slot["is_processing"] is True
        elif isinstance(slot.get("state"), int):
            busy += slot["state"] != 0
    return len(doc), busy


async def _llamacpp_slots(pool: Pool, url: str,
                          timeout_s: float) -> tuple[int | None, int | None]:
    try:
        status, doc = await _get(pool, f"{url}/slots", timeout_s)
        if status == 200 and (slots := parse_llamacpp_slots(doc)) is not None:
            return slots
        if status not in (404, 501):
            return None, None
        # /slots disabled (--no-slots): the slot count is still in /props.
        status, doc = await _get(pool, f"{url}/props", timeout_s)
    except _Unreachable:
        return None, None
    total = doc.get("total_slots") if isinstance(doc, dict) and status == 200 else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total, None
    return None, None


async def probe_llamacpp(pool: Pool, target: WorkerTarget,
                         timeout_s: float) -> WorkerStatus:
    url = target.url
    try:
        status, _ = await _get(pool, f"{url}/health", timeout_s)
    except _Unreachable as exc:
        return WorkerStatus(target, reachable=False, healthy=False, detail=str(exc))
    if status == 503:
        return WorkerStatus(target, reachable=True, healthy=False, detail="loading model")
    if status != 200:
        return WorkerStatus(target, reachable=True, healthy=False,
                            detail=f"/health: HTTP {status}")

    async def models() -> tuple[int | None, Any]:
        try:
            return await _get(pool, f"{url}/v1/models", timeout_s)
        except _Unreachable:
            return None, None

    (m_status, m_doc), (total, busy) = await asyncio.gather(
        models(), _llamacpp_slots(pool, url, timeout_s))
    parsed = parse_llamacpp_models(m_doc) if m_status == 200 else None
    if parsed is None:
        return WorkerStatus(target, reachable=True, healthy=True,
                            detail=f"/v1/models: {f'HTTP {m_status}' if m_status else 'no answer'}",
                            slots_total=total, slots_busy=busy)
    return WorkerStatus(target, reachable=True, healthy=True, models=parsed[0],
                        loaded_models=parsed[1], slots_total=total, slots_busy=busy)


# -- Ollama ----------------------------------------------------------------------------


def _ollama_names(doc: Any) -> list[dict[str, Any]] | None:
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        return None
    return [m for m in models if isinstance(m, dict)
            and isinstance(m.get("name") or m.get("model"), str)]


def parse_ollama_tags(doc: Any) -> tuple[str, ...] | None:
    entries = _ollama_names(doc)
    if entries is None:
        return None
    return tuple(str(m.get("name") or m.get("model")) for m in entries)


def parse_ollama_ps(doc: Any) -> tuple[tuple[str, ...], int] | None:
    """(loaded model names, VRAM they hold in MiB) from ``/api/ps``."""
    entries = _ollama_names(doc)
    if entries is None:
        return None
    vram = 0
    for m in entries:
        size = m.get("size_vram")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            vram += size
    return tuple(str(m.get("name") or m.get("model")) for m in entries), vram // _MIB


async def probe_ollama(pool: Pool, target: WorkerTarget,
                       timeout_s: float) -> WorkerStatus:
    url = target.url
    try:
        status, doc = await _get(pool, f"{url}/api/version", timeout_s)
    except _Unreachable as exc:
        return WorkerStatus(target, reachable=False, healthy=False, detail=str(exc))
    version = doc.get("version") if isinstance(doc, dict) else None
    if status != 200 or not isinstance(version, str):
        return WorkerStatus(target, reachable=True, healthy=False,
                            detail=f"/api/version: HTTP {status}" if status != 200
                            else "/api/version: not an Ollama answer")

    async def get(path: str) -> tuple[int | None, Any]:
        try:
            return await _get(pool, f"{url}{path}", timeout_s)
        except _Unreachable:
            return None, None

    (t_status, t_doc), (p_status, p_doc) = await asyncio.gather(get("/api/tags"),
                                                                get("/api/ps"))
    models = parse_ollama_tags(t_doc) if t_status == 200 else None
    ps = parse_ollama_ps(p_doc) if p_status == 200 else None
    problems = [p for p, ok in (("/api/tags", models is not None), ("/api/ps", ps is not None))
                if not ok]
    return WorkerStatus(target, reachable=True, healthy=True,
                        detail=f"{', '.join(problems)} unreadable" if problems else "ok",
                        models=models or (), loaded_models=ps[0] if ps else (),
                        vram_used_mb=ps[1] if ps else None, version=version)


# -- dispatch --------------------------------------------------------------------------


async def probe(pool: Pool, target: WorkerTarget,
                timeout_s: float) -> WorkerStatus:
    try:
        if target.kind == "ollama":
            return await probe_ollama(pool, target, timeout_s)
        return await probe_llamacpp(pool, target, timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a strange answer must never stop the heartbeat
        return WorkerStatus(target, reachable=False, healthy=False,
                            detail=f"probe error: {type(exc).__name__}")
