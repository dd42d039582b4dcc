"""A worker's entry in the config (``workers[i]``), also the shape agents register.

Kept apart from the rest of the schema so the registry and the routing policies can
name ``WorkerSpec`` without importing every section's parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.config.kit import ConfigError, Section, check_url

WORKER_KINDS = ("llamacpp", "openai", "ollama")
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
    spec = WorkerSpec(name=name, url=url,
                      kind=s.text("kind", "llamacpp", choices=WORKER_KINDS),
                      models=tuple(models),
                      max_concurrency=s.integer("max_concurrency", 0, lo=0),
                      api_key_env=s.text("api_key_env"),
                      api=s.text("api", "openai", choices=("openai", "native")))
    s.done()
    if spec.api == "native" and spec.kind != "ollama":
        raise ConfigError(f"{path}.api: 'native' is only for kind ollama")
    return spec
