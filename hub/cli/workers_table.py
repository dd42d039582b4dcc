"""The table ``spokehub workers`` prints, from the hub's ``GET /admin/workers`` answer.

Names, models, details and sources come from agents and from the workers themselves,
so every cell is stripped of terminal escapes and control characters (an ANSI
sequence or a CR in a model name must not rewrite the operator's screen) and of URL
credentials. ``--json`` output gets the credential scrub too; JSON escapes the rest.
"""

from __future__ import annotations

from typing import Any

from hub.cli.hub_client import safe
from hub.fleet.agent_policy import redact_text

COLUMNS = ("NAME", "KIND", "SOURCE", "HEALTH", "BREAKER", "MODELS", "SLOTS", "VRAM FREE",
           "IN-FLIGHT", "EWMA")
MAX_CELL = 200


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def text(value: object) -> str:
    """One cell: '-' when empty, else the value made safe and at most MAX_CELL long."""
    if value is None or value == "":
        return "-"
    out = safe(value)
    return out if len(out) <= MAX_CELL else out[:MAX_CELL - 3] + "..."


def health(w: dict[str, Any]) -> str:
    flags = []
    if w.get("draining"):
        flags.append("draining")
    if w.get("agent_stale"):
        flags.append("stale")
    if w.get("ejected_for_models"):
        flags.append("ejected")
    base = "up" if w.get("healthy") else "down"
    return ", ".join([base, *flags])


def breaker(w: dict[str, Any]) -> str:
    snap = w.get("breaker")
    if not isinstance(snap, dict):
        return "-"
    state = text(snap.get("state"))
    retry_in = _num(snap.get("retry_in_s"))
    if state == "open" and retry_in is not None:
        return f"open ({retry_in:.0f}s)"
    return state


def slots(w: dict[str, Any]) -> str:
    total, busy = _num(w.get("slots_total")), _num(w.get("slots_busy"))
    if total is None:
        return "-"
    return f"{'?' if busy is None else f'{busy:.0f}'}/{total:.0f}"


def vram(w: dict[str, Any]) -> str:
    mb = _num(w.get("vram_free_mb"))
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def latency(w: dict[str, Any]) -> str:
    ms = _num(w.get("ewma_latency_ms"))
    if ms is None:
        return "-"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def models(w: dict[str, Any]) -> str:
    names = w.get("models")
    if not isinstance(names, list) or not names:
        return "-"
    return text(",".join(str(m) for m in names))


def row(w: dict[str, Any]) -> list[str]:
    return [text(w.get("name")), text(w.get("kind")), text(w.get("source")), health(w),
            breaker(w), models(w), slots(w), vram(w), text(w.get("in_flight")), latency(w)]


def render_table(workers: list[dict[str, Any]]) -> str:
    if not workers:
        return "no workers registered\n"
    rows = [list(COLUMNS), *(row(w) for w in workers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True))
             .rstrip() for r in rows]
    up = sum(1 for w in workers if w.get("healthy"))
    summary = f"{len(workers)} worker{'s' if len(workers) != 1 else ''}: {up} up, " \
              f"{len(workers) - up} down"
    draining = sum(1 for w in workers if w.get("draining"))
    if draining:
        summary += f", {draining} draining"
    lines += ["", summary]
    for w in workers:
        if not w.get("healthy") and w.get("detail"):
            lines.append(f"  {text(w.get('name'))}: {text(w.get('detail'))}")
    return "\n".join(lines) + "\n"


def scrub(doc: Any) -> Any:
    """The hub's JSON answer with URL credentials removed from every string (a hub
    that predates redacting them would show them)."""
    if isinstance(doc, str):
        return redact_text(doc)
    if isinstance(doc, list):
        return [scrub(v) for v in doc]
    if isinstance(doc, dict):
        return {k: scrub(v) for k, v in doc.items()}
    return doc
