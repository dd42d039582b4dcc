"""Agent endpoints: heartbeat (register/refresh workers) and deregistration."""

from __future__ import annotations

import json

from aiohttp import web

from hub.api.body import read_body, require_json
from hub.errors import InvalidJSON, NotFound
from hub.runtime.keys import HUB

MAX_HEARTBEAT_BYTES = 256 * 1024


async def heartbeat(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    principal = hub.authorize(request.headers.get("Authorization"), "agent")
    if not hub.config.agents.enabled:
        raise NotFound("Agent registration is disabled on this hub (agents.enabled: false; "
                       "it defaults to off while auth is off)")
    require_json(request)
    body = await read_body(request, MAX_HEARTBEAT_BYTES)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJSON("Heartbeat body is not valid JSON") from None
    result = await hub.agents.heartbeat(doc, principal)
    # The agent's own interval, but at least three heartbeats per TTL.
    asked = doc.get("interval_s") if isinstance(doc, dict) else None
    ceiling = max(1.0, hub.config.agents.ttl_s / 3)
    interval = ceiling
    if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
        interval = min(max(float(asked), 1.0), ceiling)
    return web.json_response({"accepted": result.accepted, "rejected": result.rejected,
                              "warnings": result.warnings, "interval_s": interval})


async def deregister(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    principal = hub.authorize(request.headers.get("Authorization"), "agent")
    removed = hub.agents.deregister(request.match_info["agent_id"], principal.sub)
    return web.json_response({"removed": removed})


async def list_agents(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.authorize(request.headers.get("Authorization"), "admin")
    out = []
    for agent_id, rec in sorted(hub.agents.records.items()):
        if not rec.heard:  # restored from the state file: listed once it reports again
            continue
        source = hub.agents.source(agent_id)
        out.append({"agent_id": agent_id, "token_subject": rec.owner, "host": rec.host,
                    "last_seen": rec.last_seen, "labels": rec.labels,
                    "workers": [w.name for w in hub.registry if w.source == source]})
    return web.json_response({"agents": out})


def add_agent_routes(app: web.Application) -> None:
    app.router.add_post("/v1/agents/heartbeat", heartbeat)
    app.router.add_delete("/v1/agents/{agent_id}", deregister)
    app.router.add_get("/admin/agents", list_agents)
