"""Any OpenAI-compatible server: ``GET /models`` (below its base URL, which includes
``/v1``) is both the health check and the model list."""

from __future__ import annotations

from typing import Any

from hub.probing.result import ProbeResult
from hub.probing.session import ProbeSession


def model_entries(doc: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """(id, entry) per model of an OpenAI-style model list; None when it is not one."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    return [(m["id"], m) for m in data
            if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]


def parse_model_ids(doc: Any) -> tuple[str, ...] | None:
    """Model ids from an OpenAI-style model list; None when it is not one."""
    entries = model_entries(doc)
    return None if entries is None else tuple(name for name, _ in entries)


async def probe(s: ProbeSession) -> ProbeResult:
    doc, down = await s.check("/models")
    if down is not None:
        return down
    models = parse_model_ids(doc)
    if models is None:
        return ProbeResult(healthy=False, detail="/models: not a model list")
    return ProbeResult(healthy=True, detail="ok", models=models)
