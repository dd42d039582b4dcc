"""Ollama's API at the hub, for Ollama clients pointed at it (``host=`` the hub).

Forwarded, by ``model``, on the same path as chat (``routes._inference``): ``POST
/api/chat``, ``/api/generate`` (NDJSON streams, ``stream`` true unless the body says
false, as in Ollama), ``/api/embed`` and the older ``/api/embeddings``. Ollama workers
get them natively; llama.cpp and OpenAI-compatible workers through
``hub.backends.ollama_api``, which answers as Ollama does (``done: true``, eval counts).

Answered by the hub from what it knows of the fleet: ``GET /api/tags`` (every model the
fleet serves, and each alias whose target it serves), ``GET /api/ps`` (the models some
healthy worker holds in memory), ``GET /api/version``, ``POST /api/show`` (details the
hub knows: capabilities from the routes the model is served on; no template,
parameters or model file). Sizes and digests are not the workers' (0; a digest of the
name), since a model may sit on several workers.

Every route needs the ``infer`` scope (``Authorization: Bearer``, which Ollama's clients
send from their ``headers``); the hub's own errors here are Ollama's ``{"error": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import time

from aiohttp import web

from hub.api import surfaces
from hub.api.body import read_body
from hub.api.catalog import model_routes, ollama_capabilities
from hub.api.openai_extra import Inference
from hub.auth.principal import Principal
from hub.backends.ollama_api import timestamp
from hub.errors import BadRequest, InvalidJSON, NotFound
from hub.fleet.registry import Worker
from hub.runtime.hub import Hub
from hub.runtime.keys import HUB

# The Ollama API version whose wire format the hub speaks (Ollama's docs/api.md): what
# clients that gate features on /api/version see.
OLLAMA_API_VERSION = "0.9.0"
_STARTED = timestamp(time.time())
_DETAILS = {"parent_model": "", "format": "gguf", "family": "", "families": None,
            "parameter_size": "", "quantization_level": ""}
_MAX_SHOW_BODY = 64 * 1024


def _caller(request: web.Request) -> tuple[Hub, Principal]:
    hub = request.app[HUB]
    return hub, hub.authorize(request.headers.get("Authorization"), "infer")


def _served(hub: Hub, principal: Principal) -> dict[str, list[Worker]]:
    """Model (or alias) -> the workers serving it, as this caller may see them."""
    allowed = principal.models
    served = hub.registry.known_models()
    out = {m: ws for m, ws in served.items() if allowed is None or m in allowed}
    for alias, target in hub.config.aliases.items():
        if alias not in served and target in served and (
                allowed is None or (alias in allowed and target in allowed)):
            out[alias] = served[target]
    return dict(sorted(out.items()))


def _entry(name: str, workers: list[Worker]) -> dict[str, object]:
    routes = model_routes(workers)
    return {"name": name, "model": name, "modified_at": _STARTED, "size": 0,
            "digest": hashlib.sha256(name.encode()).hexdigest(), "details": _DETAILS,
            "capabilities": ollama_capabilities(routes),
            "spokehub": {"routes": routes, "workers": [w.name for w in workers]}}


async def tags(request: web.Request) -> web.Response:
    hub, principal = _caller(request)
    return web.json_response({"models": [_entry(name, ws) for name, ws
                                         in _served(hub, principal).items()]})


async def ps(request: web.Request) -> web.Response:
    hub, principal = _caller(request)
    out = []
    for name, workers in _served(hub, principal).items():
        target = hub.config.aliases.get(name, name)
        holding = [w for w in workers if w.healthy and target in w.loaded_models]
        if holding:
            entry = _entry(name, holding)
            entry["size_vram"] = 0
            out.append(entry)
    return web.json_response({"models": out})


async def version(request: web.Request) -> web.Response:
    _caller(request)
    return web.json_response({"version": OLLAMA_API_VERSION})


async def show(request: web.Request) -> web.Response:
    hub, principal = _caller(request)
    raw = await read_body(request, _MAX_SHOW_BODY)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidJSON("Request body is not valid JSON") from None
    name = (doc.get("model") or doc.get("name")) if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("model is required", param="model")
    workers = _served(hub, principal).get(name)
    if workers is None:
        raise NotFound(f"model '{name[:200]}' not found")
    routes = model_routes(workers)
    return web.json_response({"modelfile": "", "parameters": "", "template": "",
                              "details": _DETAILS, "model_info": {},
                              "capabilities": ollama_capabilities(routes),
                              "modified_at": _STARTED,
                              "spokehub": {"routes": routes,
                                           "workers": [w.name for w in workers]}})


def add_ollama_routes(app: web.Application, inference: Inference) -> None:
    app.router.add_post("/api/chat", inference("/api/chat", surfaces.OLLAMA_CHAT))
    app.router.add_post("/api/generate", inference("/api/generate", surfaces.OLLAMA_GENERATE))
    app.router.add_post("/api/embed", inference("/api/embed", surfaces.OLLAMA_EMBED))
    app.router.add_post("/api/embeddings",
                        inference("/api/embeddings", surfaces.OLLAMA_EMBEDDINGS))
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_get("/api/version", version)
    app.router.add_post("/api/show", show)
