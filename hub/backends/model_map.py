"""A fallback provider's own model names: the request body's ``model`` is renamed.

Only the request is renamed. Answers keep the provider's name in their ``model`` field
(rewriting it would mean parsing every streamed event); ``X-Spokehub-Tier`` and
``X-Spokehub-Worker`` say where an answer came from.
"""

from __future__ import annotations

import json


def rename_model(body: bytes, content_type: str, model: str) -> bytes:
    """``body`` (a JSON object) with its ``model`` set to ``model``; ValueError for a
    body that is not one (a multipart upload names its model in a form field)."""
    if not content_type.startswith("application/json"):
        kind = content_type.partition(";")[0]
        raise ValueError(f"the model of a {kind} body cannot be renamed")
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("the body is not a JSON object")
    doc["model"] = model
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
