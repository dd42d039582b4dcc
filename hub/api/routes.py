"""Route handlers. Request path: parse -> (auth, admission) -> proxy -> relay."""

from __future__ import annotations

import asyncio
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from hub.admission import priority
from hub.api.admin import add_admin_routes
from hub.api.agents import add_agent_routes
from hub.api.anthropic import add_anthropic_routes
from hub.api.body import read_body
from hub.api.catalog import model_routes
from hub.api.ollama import add_ollama_routes
from hub.api.openai_extra import add_openai_extra_routes
from hub.api.status import add_status_routes
from hub.api.surfaces import OPENAI, OPENAI_EMBEDDINGS, Surface
from hub.auth.principal import require_model
from hub.cache import replay
from hub.errors import HubError
from hub.forward.call import Call
from hub.forward.placement import route_request
from hub.observe.logs import log_call
from hub.runtime.keys import HUB

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-ID")
    if rid and _REQUEST_ID_RE.match(rid):
        return rid
    return os.urandom(8).hex()


def _inference(route: str, surface: Surface = OPENAI) -> Handler:
    """The handler of an inference route: every API family takes this path, reading its
    requests through its ``surface`` (``surfaces.py``)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        hub = request.app[HUB]
        config = hub.config
        loop = asyncio.get_running_loop()
        trace = hub.tracer.start(request.headers)  # W3C traceparent in, the hub's span
        call = Call(request_id=_request_id(request), route=route, started=loop.time(),
                    trace=trace)
        try:
            principal = hub.authorize(surface.credentials(request), "infer")
            call.tenant = principal.tenant
            hub.ledger.check(principal.tenant)  # a spent budget with on_hard: reject -> 429
            call.priority = priority.resolve(request.headers.get(priority.HEADER), principal,
                                             hub.admission.limits_for(principal.tenant).priority)
            body = await read_body(request, surface.max_body(config.limits))
            payload = surface.parse(route, body, request, hub.registry)
            model: str = payload["model"]
            target = config.aliases.get(model)
            call.model = target or model
            require_model(principal, model)
            if target:
                require_model(principal, target)
            call.stream = surface.streams(payload)
            admission = hub.admission
            limits = admission.limits_for(principal.tenant)
            capped = surface.caps(route, payload, limits.caps)
            if capped is not None or target:
                payload = capped or payload
                body = surface.encode(payload, call.model, body)
            call.body = body
            call.content_type = surface.content_type(request)
            cache = hub.cache  # deterministic answers; a hit skips admission and workers
            plan = cache.plan(call, payload, request.headers) if cache is not None else None
            if plan is not None and cache is not None and cache.remote is not None:
                plan = await cache.look_further(plan, call)  # other hubs' answers (Redis)
            if plan is not None and plan.entry is not None:
                if call.stream:
                    return await replay.answer_stream(request, call, plan.entry, payload)
                return replay.answer_whole(call, plan.entry)
            call.queued_at = loop.time()
            call.route_req = route_request(hub.proxy.policy, route, call.model, payload,
                                           tenant=principal.tenant, headers=request.headers)
            requested = surface.requested_tokens(route, payload)
            call.cost_tokens = priority.queue_cost(len(body), requested)
            if not limits.unlimited:
                await admission.admit(principal.tenant, requested)
            response = await hub.proxy.forward(request, call)
            if plan is not None and cache is not None:
                cache.fill(plan, call, response)
            if not call.status:
                call.status = response.status
            return response
        except HubError as exc:
            call.status = exc.status
            call.error = exc.code
            exc.headers["X-Request-ID"] = call.request_id  # errors are traceable too
            exc.headers["X-Trace-Id"] = trace.trace_id
            raise
        except asyncio.CancelledError:
            if not call.answered:
                call.status = 499
                call.error = "client_disconnected"
            elif not call.status:  # it left after its whole answer: no early disconnect
                call.status = 200
            raise
        finally:
            seconds = loop.time() - call.started
            hub.metrics.observe(call, seconds)
            hub.ledger.record(call)  # in memory; the ledger's thread writes the file
            log_call(call, seconds)
            hub.tracer.finish(call, seconds)

    return handler


async def list_models(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    principal = hub.authorize(request.headers.get("Authorization"), "infer")
    allowed = principal.models  # a token limited to some models sees only those
    registry, config = hub.registry, hub.config
    served = registry.known_models()
    data: list[dict[str, object]] = []
    for model_id in sorted(served):
        if allowed is not None and model_id not in allowed:
            continue
        data.append({"id": model_id, "object": "model", "created": 0, "owned_by": "spokehub",
                     "spokehub": {"workers": [w.name for w in served[model_id]],
                                  "healthy_workers": [w.name for w in served[model_id]
                                                      if w.healthy],
                                  "routes": model_routes(served[model_id])}})
    for alias, target in sorted(config.aliases.items()):
        if allowed is not None and (alias not in allowed or target not in allowed):
            continue
        if alias not in served and target in served:
            data.append({"id": alias, "object": "model", "created": 0, "owned_by": "spokehub",
                         "spokehub": {"alias_of": target}})
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    request.app[HUB].authorize_path(request.path, request.headers.get("Authorization"))
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.authorize_path(request.path, request.headers.get("Authorization"))
    registry = hub.registry
    up = sum(1 for w in registry if w.healthy)
    status = 200 if up else 503
    return web.json_response({"ready": bool(up), "healthy_workers": up,
                              "workers": len(registry)}, status=status)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.authorize_path(request.path, request.headers.get("Authorization"))
    body = hub.metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", _inference("/chat/completions"))
    app.router.add_post("/v1/completions", _inference("/completions"))
    app.router.add_post("/v1/embeddings", _inference("/embeddings", OPENAI_EMBEDDINGS))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_openai_extra_routes(app, _inference)
    add_anthropic_routes(app, _inference)
    add_ollama_routes(app, _inference)
    add_admin_routes(app)
    add_agent_routes(app)
    add_status_routes(app)
