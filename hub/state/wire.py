"""The shared records' wire form: small JSON objects, each stamped with the hub that
wrote it, so a hub skips its own messages (no echo loops) and a receiver can drop
anything malformed or oversized before it touches local state."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_MESSAGE_BYTES = 512 * 1024  # a heartbeat is at most 256 KiB; room for the envelope


def encode(hub_id: str, body: dict[str, Any]) -> bytes:
    return json.dumps({**body, "hub": hub_id}, separators=(",", ":")).encode()


def decode(payload: bytes | str | None) -> dict[str, Any] | None:
    """The record, or None if it is not a JSON object (or too big to be ours)."""
    if payload is None or len(payload) > MAX_MESSAGE_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def from_other_hub(doc: dict[str, Any], hub_id: str) -> bool:
    """A record some other hub wrote (ours come back over pub/sub too)."""
    sender = doc.get("hub")
    return isinstance(sender, str) and sender != hub_id


def number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        out = float(value)
    except OverflowError:  # an int past float range
        return None
    return out if math.isfinite(out) else None
