"""The local workers an agent reports: where it probes each one, the name the hub
knows it by (``<agent_id>-<kind>-<port>`` unless the config names it), the URL the
hub is told to use (the probed URL with ``advertise_host`` as its host), and the
default ports tried when no workers are listed."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# Ports probed on 127.0.0.1 when ``discover`` is on and no workers are listed.
DISCOVERY_DEFAULTS: tuple[tuple[str, int], ...] = (("llamacpp", 8080), ("ollama", 11434))


@dataclass(frozen=True, slots=True)
class WorkerTarget:
    """One local worker: ``url`` is where the agent probes it, ``advertise_url``
    is what the hub is told to use."""

    name: str
    url: str
    kind: str
    advertise_url: str
    discovered: bool = False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def advertised_url(url: str, advertise_host: str | None) -> str:
    """``url`` with its host replaced by ``advertise_host`` (port and path kept)."""
    if not advertise_host:
        return url
    parts = urlsplit(url)
    netloc = _url_host(advertise_host)
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def derived_name(agent_id: str, kind: str, url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{agent_id}-{kind}-{port}"


def make_target(agent_id: str, url: str, kind: str, name: str | None,
                advertise_host: str | None, *, discovered: bool = False) -> WorkerTarget:
    return WorkerTarget(name=name or derived_name(agent_id, kind, url), url=url, kind=kind,
                        advertise_url=advertised_url(url, advertise_host),
                        discovered=discovered)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def discovery_targets(agent_id: str, advertise_host: str | None) -> tuple[WorkerTarget, ...]:
    """The candidates on :data:`DISCOVERY_DEFAULTS`; reported only once they answer."""
    return tuple(make_target(agent_id, f"http://127.0.0.1:{port}", kind, None,
                             advertise_host, discovered=True)
                 for kind, port in DISCOVERY_DEFAULTS)
