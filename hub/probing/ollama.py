"""Ollama: ``/api/version`` for health, ``/api/tags`` (installed models, what it can
serve) and ``/api/ps`` (loaded ones, which answer without a load delay, and the VRAM
they hold in ``size_vram``)."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.probing.result import ProbeResult
from hub.probing.session import ProbeSession


def _names(doc: Any) -> list[tuple[str, dict[str, Any]]] | None:
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        return None
    out: list[tuple[str, dict[str, Any]]] = []
    for m in models:
        name = (m.get("name") or m.get("model")) if isinstance(m, dict) else None
        if isinstance(name, str) and name:
            out.append((name, m))
    return out


def parse_tags(doc: Any) -> tuple[str, ...] | None:
    """Installed model names from ``/api/tags``."""
    entries = _names(doc)
    return None if entries is None else tuple(name for name, _ in entries)


def parse_ps(doc: Any) -> tuple[tuple[str, ...], int] | None:
    """(loaded model names, the VRAM they hold in bytes) from ``/api/ps``."""
    entries = _names(doc)
    if entries is None:
        return None
    vram = 0
    for _, m in entries:
        size = m.get("size_vram")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            vram += size
    return tuple(name for name, _ in entries), vram


async def probe(s: ProbeSession) -> ProbeResult:
    doc, down = await s.check("/api/version")
    if down is not None:
        return down
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, str):
        return ProbeResult(healthy=False, detail="/api/version: not an Ollama answer")
    (tags_doc, tags_problem), (ps_doc, ps_problem) = await asyncio.gather(
        s.read("/api/tags"), s.read("/api/ps"))
    models = parse_tags(tags_doc)
    ps = parse_ps(ps_doc)
    problems = [p or f"{path}: not a model list" for path, p, ok in (
        ("/api/tags", tags_problem, models is not None), ("/api/ps", ps_problem, ps is not None))
        if not ok]
    detail = "; ".join(problems) if problems else "ok"
    return ProbeResult(healthy=True, detail=f"{detail} (ollama {version})", models=models,
                       loaded_models=ps[0] if ps else None,
                       vram_used_bytes=ps[1] if ps else None, version=version)
