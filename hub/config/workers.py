"""A worker's entry in the config (``workers[i]``), also the shape agents register.

Kept apart from the rest of the schema so the registry and the routing policies can
name ``WorkerSpec`` without importing every section's parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hub.config.kit import ConfigError, Section, check_url

WORKER_KINDS = ("llamacpp", "openai", "ollama")
TIERS = ("local", "fallback")  # fallback: only spill-over sends it requests (hub.forward.spill)

# The hub's inference routes a worker may serve, by the path clients call -> the route's
# key (``Call.route``: OpenAI's below ``/v1``, llama.cpp's and Ollama's as they are).
ROUTES: dict[str, str] = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
    "/v1/responses": "/responses",
    "/v1/messages": "/messages",
    "/v1/messages/count_tokens": "/messages/count_tokens",
    "/v1/rerank": "/rerank",
    "/v1/audio/transcriptions": "/audio/transcriptions",
    "/tokenize": "/tokenize",
    "/detokenize": "/detokenize",
}
OPENAI_ROUTES = frozenset({"/chat/completions", "/completions", "/embeddings"})
# What each kind serves unless its ``routes:`` says otherwise (None: every route).
KIND_ROUTES: dict[str, frozenset[str] | None] = {
    "llamacpp": None,
    "ollama": OPENAI_ROUTES,
    "openai": OPENAI_ROUTES,
}
# Ollama's API at the hub: native on Ollama workers, else translated to the OpenAI route
# beside it, so a worker serves it when it serves that route.
OLLAMA_API_ROUTES: dict[str, str] = {
    "/api/chat": "/chat/completions",
    "/api/generate": "/chat/completions",
    "/api/embed": "/embeddings",
    "/api/embeddings": "/embeddings",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    name: str
    url: str
    kind: str = "llamacpp"
    models: tuple[str, ...] = ()
    max_concurrency: int = 0  # 0 = unlimited at the hub
    api_key_env: str | None = None
    api: str = "openai"  # ollama only: "native" sends chat to /api/chat (Ollama without /v1)
    routes: frozenset[str] | None = None  # route keys it serves; None: its kind's default
    tier: str = "local"  # "fallback": never an ordinary candidate, only a spill-over target
    # fallback only: the hub's model name -> the provider's, sent as the body's "model"
    model_map: tuple[tuple[str, str], ...] = ()

    @property
    def fallback(self) -> bool:
        return self.tier == "fallback"

    def upstream_model(self, model: str) -> str | None:
        """The provider's name for ``model`` when the model map renames it, else None."""
        for local, remote in self.model_map:
            if local == model:
                return None if remote == model else remote
        return None

    def serves_route(self, route: str) -> bool:
        """Whether this worker takes requests on ``route`` (a ``Call.route`` key)."""
        native = OLLAMA_API_ROUTES.get(route)
        if native is not None:
            if self.kind == "ollama":
                return True
            route = native
        routes = self.routes if self.routes is not None else KIND_ROUTES.get(self.kind)
        return routes is None or route in routes


def parse_worker(raw: object, path: str) -> WorkerSpec:
    s = Section(raw, path)
    name = s.text("name", required=True)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{path}.name: use letters, digits and _.:- (max 63), got {name!r}")
    url = check_url(s.text("url", required=True), f"{path}.url")
    models = []
    for i, m in enumerate(s.items("models")):
        if not isinstance(m, str) or not m:
            raise ConfigError(f"{path}.models[{i}]: must be a non-empty string")
        models.append(m)
    routes: set[str] | None = None
    if s.get("routes") is not None:
        routes = set()
        for i, r in enumerate(s.items("routes")):
            if not isinstance(r, str) or r not in ROUTES:
                raise ConfigError(f"{path}.routes[{i}]: {r!r} is not a hub route; choose "
                                  f"from {', '.join(ROUTES)}")
            routes.add(ROUTES[r])
    spec = WorkerSpec(name=name, url=url,
                      kind=s.text("kind", "llamacpp", choices=WORKER_KINDS),
                      models=tuple(models),
                      max_concurrency=s.integer("max_concurrency", 0, lo=0),
                      api_key_env=s.text("api_key_env"),
                      api=s.text("api", "openai", choices=("openai", "native")),
                      routes=None if routes is None else frozenset(routes),
                      tier=s.text("tier", "local", choices=TIERS))
    model_map = _model_map(s, spec)
    s.done()
    if spec.api == "native" and spec.kind != "ollama":
        raise ConfigError(f"{path}.api: 'native' is only for kind ollama")
    if not spec.fallback:
        return spec
    if spec.kind != "openai":
        raise ConfigError(f"{path}.tier: a fallback worker must be kind openai "
                          f"(an OpenAI-compatible upstream), got {spec.kind!r}")
    # A fallback serves the hub's names: the map's keys, and any models: it takes as is.
    served = tuple(dict.fromkeys([*(local for local, _ in model_map), *spec.models]))
    if not served:
        raise ConfigError(f"{path}.model_map: a fallback worker needs the models it takes "
                          f"(model_map: {{hub-model: provider-model}}, or models:)")
    return replace(spec, models=served, model_map=model_map)


def _model_map(s: Section, spec: WorkerSpec) -> tuple[tuple[str, str], ...]:
    raw = s.get("model_map")
    if raw is None:
        return ()
    where = s.key("model_map")
    if not spec.fallback:
        raise ConfigError(f"{where}: only for tier: fallback workers")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of hub model -> provider model")
    out: list[tuple[str, str]] = []
    for local, remote in raw.items():
        if not isinstance(local, str) or not local or not isinstance(remote, str) or not remote:
            raise ConfigError(f"{where}.{local}: hub and provider model names must be "
                              f"non-empty strings")
        out.append((local, remote))
    return tuple(out)
