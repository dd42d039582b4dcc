"""Operator endpoints: worker status, drain, config reload, usage."""

from __future__ import annotations

import logging

from aiohttp import web

from hub.api.body import require_json
from hub.api.usage import usage
from hub.config.schema import ConfigError, load_config
from hub.errors import BadRequest, NotFound
from hub.fleet.agent_policy import redact_text, redact_url
from hub.fleet.registry import Worker
from hub.runtime.hub import Hub
from hub.runtime.keys import HUB

log = logging.getLogger("spokehub.admin")


def worker_status(w: Worker) -> dict[str, object]:
    """A worker as the admin API and the status page show it; URL credentials (a config
    worker may carry them) are never shown."""
    return {"name": w.name, "url": redact_url(w.url), "kind": w.spec.kind, "source": w.source,
            "tier": w.spec.tier,  # "fallback": only spill-over sends it requests
            "healthy": w.healthy, "detail": redact_text(w.detail), "draining": w.draining,
            "models": sorted(w.models), "loaded_models": sorted(w.loaded_models),
            "in_flight": w.in_flight, "slots_total": w.slots_total, "slots_busy": w.slots_busy,
            "vram_free_mb": w.vram_free_mb, "agent_stale": w.agent_stale,
            "ewma_latency_ms": None if w.ewma_latency_s is None
            else round(w.ewma_latency_s * 1000, 2)}


def reload_config(hub: Hub) -> list[str]:
    """Re-read the config file; on any error keep serving the old config and raise."""
    if not hub.config_path:
        raise ConfigError("the hub was not started from a config file")
    new = load_config(hub.config_path)
    changes = hub.apply(new)
    log.warning("config reloaded from %s: %s", hub.config_path,
                "; ".join(changes) or "no changes")
    return changes


def _admin(request: web.Request) -> Hub:
    hub = request.app[HUB]
    hub.authorize(request.headers.get("Authorization"), "admin")
    return hub


async def list_workers(request: web.Request) -> web.Response:
    hub = _admin(request)
    proxy = hub.proxy
    workers = []
    for w in hub.registry:
        status = worker_status(w)
        status["breaker"] = proxy.breakers.get(w.name).snapshot()
        status["ejected_for_models"] = sorted(
            model for model, detector in proxy.outliers.items() if detector.is_ejected(w.name))
        workers.append(status)
    return web.json_response({"workers": workers,
                              "retry_budget": proxy.retry_budget.snapshot()})


def _worker(request: web.Request) -> Worker:
    name = request.match_info["name"]
    hub = _admin(request)
    require_json(request)
    worker = hub.registry.get(name)
    if worker is None:
        raise NotFound(f"No worker named '{name}'")
    return worker


async def drain(request: web.Request) -> web.Response:
    """Stop sending new requests to a worker; in-flight ones finish."""
    worker = _worker(request)
    request.app[HUB].registry.set_draining(worker, True)  # shared with other hubs, if any
    log.warning("worker %s draining (%d in flight)", worker.name, worker.in_flight)
    return web.json_response(worker_status(worker))


async def undrain(request: web.Request) -> web.Response:
    worker = _worker(request)
    request.app[HUB].registry.set_draining(worker, False)
    log.warning("worker %s back in rotation", worker.name)
    return web.json_response(worker_status(worker))


async def reload(request: web.Request) -> web.Response:
    hub = _admin(request)
    require_json(request)
    try:
        changes = reload_config(hub)
    except ConfigError as exc:
        log.error("config reload rejected, keeping the old config: %s", exc)
        raise BadRequest(f"Config rejected, old config kept: {exc}") from None
    return web.json_response({"reloaded": True, "changes": changes})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/workers", list_workers)
    app.router.add_post("/admin/workers/{name}/drain", drain)
    app.router.add_post("/admin/workers/{name}/undrain", undrain)
    app.router.add_post("/admin/reload", reload)
    app.router.add_get("/admin/usage", usage)
