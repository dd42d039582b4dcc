"""Agent configuration: a YAML file plus ``SPOKEHUB_*`` environment overrides.

Every validation error names the offending key (``workers[1].kind: ...``) or
environment variable so an operator can fix it without reading a traceback.

The hub token is never accepted on the command line or in the YAML file itself:
it comes from ``SPOKEHUB_AGENT_TOKEN``, ``SPOKEHUB_AGENT_TOKEN_FILE`` or the
``token_file`` key, and is wrapped in :class:`Secret` so it cannot end up in a
log line or a ``repr`` by accident.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.targets import WorkerTarget, discovery_targets, make_target
from hub.config.kit import ConfigError, check_url, read_yaml

DEFAULT_CONFIG_PATH = Path("/etc/spokehub/agent.yaml")
WORKER_KINDS = ("llamacpp", "ollama")
GPU_MODES = ("auto", "nvidia", "rocm", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Same rule as the hub's worker names. Agent ids are shorter so that the derived
# worker names (``<agent_id>-<kind>-<port>``, at most 15 more characters) still fit.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
MAX_AGENT_ID = 48
MAX_WORKERS = 64  # the hub's limit per heartbeat
MAX_HUBS = 16
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")

ENV_HUB_URL = "SPOKEHUB_HUB_URL"
ENV_TOKEN = "SPOKEHUB_AGENT_TOKEN"
ENV_TOKEN_FILE = "SPOKEHUB_AGENT_TOKEN_FILE"
ENV_AGENT_ID = "SPOKEHUB_AGENT_ID"
ENV_ADVERTISE_HOST = "SPOKEHUB_ADVERTISE_HOST"
ENV_HEARTBEAT_S = "SPOKEHUB_HEARTBEAT_S"

log = logging.getLogger("spokehub.agent")


class Secret:
    """A string that never shows itself in ``str``/``repr``/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    hub_url: str | None  # the preferred hub: hub_urls[0]
    agent_id: str
    token: Secret | None
    heartbeat_s: float = 5.0
    advertise_host: str | None = None
    workers: tuple[WorkerTarget, ...] = ()
    discover: bool = True
    gpu: str = "auto"
    probe_timeout_s: float = 2.0
    hub_timeout_s: float = 10.0
    log_level: str = "info"
    token_path: str | None = None  # where the token was read from, to re-read on 401/403
    hub_urls: tuple[str, ...] = ()  # every hub, in preferred order (hub_url alone: one)
    hub_failback_s: float = 120.0  # away from the preferred hub this long: try it again

    @property
    def hubs(self) -> tuple[str, ...]:
        if self.hub_urls:
            return self.hub_urls
        return (self.hub_url,) if self.hub_url else ()

    def targets(self) -> tuple[WorkerTarget, ...]:
        """The workers to probe: the listed ones, else the discovery candidates."""
        if self.workers or not self.discover:
            return self.workers
        return discovery_targets(self.agent_id, self.advertise_host)


# -- validation primitives ---------------------------------------------------------


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _mapping(data: object, path: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: must be a mapping")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{path or 'config'}: keys must be strings, got {key!r}")
    return data


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{_where(path, key)}: unknown key")


def _text(data: Mapping[str, Any], key: str, path: str = "") -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{_where(path, key)}: must be a non-empty string")
    return value.strip()


def _number(value: object, where: str, lo: float, hi: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number")
    out = float(value)
    if not math.isfinite(out) or out < lo or out > hi:
        raise ConfigError(f"{where}: must be between {lo:g} and {hi:g}, got {value}")
    return out


def check_agent_id(value: str, where: str) -> str:
    if not _NAME_RE.match(value) or len(value) > MAX_AGENT_ID:
        raise ConfigError(f"{where}: use letters, digits and _.:- "
                          f"(max {MAX_AGENT_ID}), got {value!r}")
    return value


def check_host(value: str, where: str) -> str:
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST_RE.match(host) or ".." in host:
        raise ConfigError(f"{where}: must be a host name or IP address (no scheme or port), "
                          f"got {value!r}")
    return host


# -- parsing -------------------------------------------------------------------------

_TOP_KEYS = ("hub_url", "hub_urls", "hub_failback_s", "agent_id", "token_file", "heartbeat_s",
             "advertise_host", "workers", "discover", "gpu", "probe_timeout_s", "hub_timeout_s",
             "log_level")
_WORKER_KEYS = ("url", "kind", "name")


def _workers(raw: object, agent_id: str, advertise_host: str | None) -> tuple[WorkerTarget, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("workers: must be a list")
    if len(raw) > MAX_WORKERS:
        raise ConfigError(f"workers: at most {MAX_WORKERS} per agent, got {len(raw)}")
    out: list[WorkerTarget] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        path = f"workers[{i}]"
        data = _mapping(item, path)
        _check_keys(data, _WORKER_KEYS, path)
        url_text = _text(data, "url", path)
        if url_text is None:
            raise ConfigError(f"{path}.url: is required")
        url = check_url(url_text, f"{path}.url")
        kind = _text(data, "kind", path) or "llamacpp"
        if kind not in WORKER_KINDS:
            raise ConfigError(f"{path}.kind: must be one of {', '.join(WORKER_KINDS)}, "
                              f"got {kind!r}")
        name = _text(data, "name", path)
        if name is not None and not _NAME_RE.match(name):
            raise ConfigError(f"{path}.name: use letters, digits and _.:- (max 63), "
                              f"got {name!r}")
        target = make_target(agent_id, url, kind, name, advertise_host)
        if target.name in names:
            key = "name" if name else "url"
            raise ConfigError(f"{path}.{key}: duplicate worker name {target.name!r}")
        names.add(target.name)
        out.append(target)
    return tuple(out)


def _hub_urls(data: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
    """``SPOKEHUB_HUB_URL`` (one URL or several, comma-separated), else ``hub_urls``
    (a list) or ``hub_url`` (one), never both keys."""
    items: list[tuple[str, str]]
    if env.get(ENV_HUB_URL, "").strip():
        parts = [p.strip() for p in env[ENV_HUB_URL].split(",")]
        if not all(parts):
            raise ConfigError(f"{ENV_HUB_URL}: an empty URL in the comma-separated list")
        items = [(p, ENV_HUB_URL) for p in parts]
    elif data.get("hub_urls") is not None:
        if data.get("hub_url") is not None:
            raise ConfigError("hub_urls: set hub_url or hub_urls, not both")
        raw = data["hub_urls"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError("hub_urls: must be a non-empty list of URLs")
        items = []
        for i, value in enumerate(raw):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"hub_urls[{i}]: must be a non-empty string")
            items.append((value.strip(), f"hub_urls[{i}]"))
    else:
        text = _text(data, "hub_url")
        items = [(text, "hub_url")] if text else []
    if len(items) > MAX_HUBS:
        raise ConfigError(f"{items[0][1].split('[')[0]}: at most {MAX_HUBS} hubs, "
                          f"got {len(items)}")
    urls: list[str] = []
    for text, where in items:
        url = check_url(text, where)
        if url in urls:
            raise ConfigError(f"{where}: {url} is listed twice")
        urls.append(url)
    return tuple(urls)


def read_token_file(path_text: str, where: str) -> Secret:
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    token = text.strip()
    if not token:
        raise ConfigError(f"{where}: {path} is empty")
    if mode & stat.S_IROTH:
        log.warning("token file %s is world-readable; chmod 0640 it", path)
    return Secret(token)


def parse_config(raw: object, env: Mapping[str, str] | None = None, *,
                 require_hub: bool = True) -> AgentConfig:
    """Validate the YAML document ``raw`` with ``env`` overrides applied.

    ``require_hub=False`` (used by ``--once --print``) allows a missing hub URL/token.
    """
    env = os.environ if env is None else env
    data = _mapping(raw, "")
    if "token" in data:
        raise ConfigError(f"token: not allowed in the config file; use token_file or "
                          f"{ENV_TOKEN}")
    _check_keys(data, _TOP_KEYS, "")

    hub_urls = _hub_urls(data, env)
    hub_url = hub_urls[0] if hub_urls else None
    hub_failback_s = 120.0
    if data.get("hub_failback_s") is not None:
        hub_failback_s = _number(data["hub_failback_s"], "hub_failback_s", 1, 86400)

    if env.get(ENV_AGENT_ID):
        agent_id = check_agent_id(env[ENV_AGENT_ID].strip(), ENV_AGENT_ID)
    elif (text := _text(data, "agent_id")) is not None:
        agent_id = check_agent_id(text, "agent_id")
    else:
        hostname = socket.gethostname()
        try:
            agent_id = check_agent_id(hostname, "agent_id")
        except ConfigError:
            short = hostname.split(".", 1)[0]
            agent_id = check_agent_id(short, f"agent_id (default from hostname {hostname!r})")

    token: Secret | None = None
    token_path: str | None = None
    if not require_hub:
        pass  # nothing will be sent: do not touch the secret at all
    elif env.get(ENV_TOKEN, "").strip():
        token = Secret(env[ENV_TOKEN].strip())
    elif env.get(ENV_TOKEN_FILE):
        token_path = env[ENV_TOKEN_FILE]
        token = read_token_file(token_path, ENV_TOKEN_FILE)
    elif (text := _text(data, "token_file")) is not None:
        token_path = text
        token = read_token_file(token_path, "token_file")

    if env.get(ENV_HEARTBEAT_S):
        heartbeat_s = _number(env[ENV_HEARTBEAT_S], ENV_HEARTBEAT_S, 0.1, 3600)
    elif data.get("heartbeat_s") is not None:
        heartbeat_s = _number(data["heartbeat_s"], "heartbeat_s", 0.1, 3600)
    else:
        heartbeat_s = 5.0

    advertise_host: str | None = None
    if env.get(ENV_ADVERTISE_HOST):
        advertise_host = check_host(env[ENV_ADVERTISE_HOST], ENV_ADVERTISE_HOST)
    elif (text := _text(data, "advertise_host")) is not None:
        advertise_host = check_host(text, "advertise_host")

    discover = data.get("discover", True)
    if not isinstance(discover, bool):
        raise ConfigError("discover: must be true or false")
    gpu = _text(data, "gpu") or "auto"
    if gpu not in GPU_MODES:
        raise ConfigError(f"gpu: must be one of {', '.join(GPU_MODES)}, got {gpu!r}")
    log_level = _text(data, "log_level") or "info"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}, "
                          f"got {log_level!r}")
    probe_timeout_s = 2.0
    if data.get("probe_timeout_s") is not None:
        probe_timeout_s = _number(data["probe_timeout_s"], "probe_timeout_s", 0.1, 60)
    hub_timeout_s = 10.0
    if data.get("hub_timeout_s") is not None:
        hub_timeout_s = _number(data["hub_timeout_s"], "hub_timeout_s", 0.5, 120)

    workers = _workers(data.get("workers"), agent_id, advertise_host)
    # What the file cannot supply on its own comes last, after its own errors.
    if hub_url is None and require_hub:
        raise ConfigError(f"hub_url: is required (or set {ENV_HUB_URL}), or hub_urls "
                          f"for several hubs")
    if token is None and require_hub:
        raise ConfigError(f"token_file: is required (or set {ENV_TOKEN} / {ENV_TOKEN_FILE})")
    return AgentConfig(
        hub_url=hub_url, agent_id=agent_id, token=token, heartbeat_s=heartbeat_s,
        advertise_host=advertise_host,
        workers=workers,
        discover=discover, gpu=gpu, probe_timeout_s=probe_timeout_s,
        hub_timeout_s=hub_timeout_s, log_level=log_level, token_path=token_path,
        hub_urls=hub_urls, hub_failback_s=hub_failback_s)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None, *,
                require_hub: bool = True) -> AgentConfig:
    """Read and validate the config file.

    ``path=None`` means the default path; a missing default file is treated as an
    empty document so the agent can be configured from the environment alone. An
    explicitly given path must exist.
    """
    explicit = path is not None
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    return parse_config(read_yaml(p, missing_ok=not explicit), env, require_hub=require_hub)
