"""llama.cpp ``llama-server``: ``/health`` (503 while loading), ``/v1/models`` (in router
mode with a ``status`` per model), ``/slots`` (needs ``--slots``; ``/props``
``total_slots`` when it is disabled)."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.probing.openai import model_entries
from hub.probing.result import ProbeResult
from hub.probing.session import NoAnswer, ProbeSession


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
    doc, problem = await s.read("/v1/models")
    if problem is not None:
        return None, problem
    parsed = parse_models(doc)
    return parsed, None if parsed is not None else "/v1/models: not a model list"


async def _slots(s: ProbeSession) -> tuple[int | None, int | None]:
    """(total, busy); busy is None when only ``/props`` answers, both when neither does."""
    try:
        status, doc = await s.get("/slots")
    except NoAnswer:
        return None, None
    if status == 200 and (slots := parse_slots(doc)) is not None:
        return slots
    if status not in (404, 501):
        return None, None
    # /slots disabled (--no-slots): the slot count is still in /props.
    props, _ = await s.read("/props")
    return parse_props_slots(props), None


async def probe(s: ProbeSession) -> ProbeResult:
    _, down = await s.check("/health", {503: "loading model"})
    if down is not None:
        return down
    (models, problem), (total, busy) = await asyncio.gather(_models(s), _slots(s))
    return ProbeResult(healthy=True, detail=problem or "ok",
                       models=models[0] if models else None,
                       loaded_models=models[1] if models else None,
                       slots_total=total, slots_busy=busy)
