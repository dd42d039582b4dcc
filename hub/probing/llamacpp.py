"""llama.cpp ``llama-server``: ``/health`` (503 while loading), ``/v1/models`` (in router
mode with a ``status`` per model), ``/slots`` (needs ``--slots``; ``/props``
``total_slots`` when it is disabled)."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.probing.openai import model_entries
from hub.probing.result import ProbeResult
from hub.probing.session import NoAnswer, ProbeSession, http_problem


def parse_models(doc: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(models, loaded) from ``/v1/models``. A server in router mode lists models with a
    ``status``; only ``loaded`` ones count as loaded. Plain servers: all are loaded."""
    entries = model_entries(doc)
    if entries is None:
        return None
    loaded: list[str] = []
    for name, entry in entries:
        status = entry.get("status")
        value = status.get("value") if isinstance(status, dict) else status
        if value is None or value == "loaded":
            loaded.append(name)
    return tuple(name for name, _ in entries), tuple(loaded)


def parse_slots(doc: Any) -> tuple[int, int] | None:
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


def parse_props_slots(doc: Any) -> int | None:
    """``total_slots`` from ``/props``."""
    total = doc.get("total_slots") if isinstance(doc, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    return None


async def _models(s: ProbeSession) -> tuple[tuple[tuple[str, ...], tuple[str, ...]] | None,
                                            str | None]:
    status, doc, problem = await s.try_get("/v1/models")
    if status is None:
        return None, problem
    if status != 200:
        return None, http_problem("/v1/models", status)
    parsed = parse_models(doc)
    return parsed, None if parsed is not None else "/v1/models: not a model list"


async def _slots(s: ProbeSession) -> tuple[int | None, int | None]:
    """(total, busy); busy is None when only ``/props`` answers, both when neither does."""
    status, doc, _ = await s.try_get("/slots")
    if status == 200 and (slots := parse_slots(doc)) is not None:
        return slots
    if status not in (404, 501):
        return None, None
    # /slots disabled (--no-slots): the slot count is still in /props.
    status, doc, _ = await s.try_get("/props")
    return (parse_props_slots(doc) if status == 200 else None), None


async def probe(s: ProbeSession) -> ProbeResult:
    try:
        status, _ = await s.get("/health")
    except NoAnswer as exc:
        return ProbeResult(healthy=False, reachable=exc.reachable, detail=exc.first_detail)
    if status == 503:
        return ProbeResult(healthy=False, detail="loading model")
    if status != 200:
        return ProbeResult(healthy=False, detail=http_problem("/health", status))
    (models, problem), (total, busy) = await asyncio.gather(_models(s), _slots(s))
    return ProbeResult(healthy=True, detail=problem or "ok",
                       models=models[0] if models else None,
                       loaded_models=models[1] if models else None,
                       slots_total=total, slots_busy=busy)
