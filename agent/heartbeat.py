"""Talking to the hub: the heartbeat payload, the HTTP calls and the retry backoff.

Contract (hub side):

* ``POST {hub}/v1/agents/heartbeat`` with ``Authorization: Bearer <token>`` and the
  payload from :func:`build_heartbeat`; 200 answers
  ``{"accepted": [...], "rejected": [{"name", "reason"}], "interval_s": N}``.
* ``DELETE {hub}/v1/agents/{agent_id}`` on clean shutdown.

Every heartbeat carries the agent's complete state, so "re-registering" after a hub
outage or restart is simply the next heartbeat that gets a 200.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from agent.client import HEADERS, MAX_REPLY_BYTES
from agent.config import Secret
from agent.host import HostInfo
from agent.targets import WorkerTarget
from hub.probing import ProbeResult
from hub.probing.http import TRANSPORT_ERRORS, describe_error, fetch
from hub.upstream import Pool

HEARTBEAT_PATH = "/v1/agents/heartbeat"
AGENTS_PATH = "/v1/agents/"
MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 300.0
_DETAIL_CHARS = 200

# Outcomes of one call to the hub.
OK = "ok"
AUTH = "auth"  # 401/403: bad, expired or wrong-scope token
REFUSED = "refused"  # other 4xx: the hub does not like the request
UNAVAILABLE = "unavailable"  # 5xx, timeout, connection error


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A local worker and what its latest probe learned."""

    target: WorkerTarget
    result: ProbeResult

    @property
    def name(self) -> str:
        return self.target.name

    def to_json(self, vram_free_mb: int | None) -> dict[str, Any]:
        """The worker entry of a heartbeat (the hub contract's keys, nothing else)."""
        r = self.result
        return {"name": self.target.name, "url": self.target.advertise_url,
                "kind": self.target.kind, "models": list(r.models or ()),
                "loaded_models": list(r.loaded_models or ()), "slots_total": r.slots_total,
                "slots_busy": r.slots_busy, "healthy": r.healthy,
                "vram_free_mb": vram_free_mb}


def build_heartbeat(agent_id: str, version: str, interval_s: float, host: HostInfo,
                    workers: Iterable[WorkerStatus]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/agents/heartbeat``."""
    vram_free = host.vram_free_mb
    return {"agent_id": agent_id, "version": version, "interval_s": _number(interval_s),
            "host": host.to_json(), "workers": [w.to_json(vram_free) for w in workers]}


@dataclass
class Backoff:
    """Capped exponential backoff with jitter.

    The n-th delay (from 0) is ``d = min(cap_s, base_s * factor**n)`` scaled by a
    random factor in ``[1 - jitter, 1]``, so retries from many agents spread out but
    never exceed ``cap_s``. ``rng`` returns a float in [0, 1) and is injectable.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 30.0
    jitter: float = 0.5
    rng: Callable[[], float] = field(default=random.random)
    attempt: int = 0

    def peek_ceiling(self) -> float:
        return min(self.cap_s, self.base_s * self.factor ** min(self.attempt, 64))

    def next_delay(self, cap_s: float | None = None) -> float:
        """The next delay; ``cap_s`` lowers the cap for this one (never below ``base_s``)."""
        ceiling = self.peek_ceiling()
        if cap_s is not None:
            ceiling = min(ceiling, max(cap_s, self.base_s))
        self.attempt += 1
        return ceiling * (1.0 - self.jitter + self.jitter * self.rng())

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class HubReply:
    outcome: str
    status: int | None = None
    detail: str = ""
    accepted: tuple[str, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()
    interval_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def _error_detail(status: int, body: bytes) -> str:
    """A short reason from an error body (``{"error": {"message": ...}}`` or text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error", doc.get("detail", doc.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err.get("detail"))
        if isinstance(err, str):
            text = err
    text = " ".join(text.split())[:_DETAIL_CHARS]
    return f"HTTP {status}" + (f": {text}" if text else "")


def parse_reply(doc: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], float | None]:
    """(accepted, rejected, interval_s) from a 200 answer, ignoring anything malformed."""
    if not isinstance(doc, dict):
        return (), (), None
    raw_acc = doc.get("accepted")
    accepted = tuple(str(a) for a in raw_acc if isinstance(a, str)) \
        if isinstance(raw_acc, list) else ()
    rejected: list[tuple[str, str]] = []
    raw_rej = doc.get("rejected")
    for item in raw_rej if isinstance(raw_rej, list) else ():
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            rejected.append((item["name"], str(item.get("reason", ""))))
    interval = doc.get("interval_s")
    interval_s: float | None = None
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
        interval_s = min(max(float(interval), MIN_INTERVAL_S), MAX_INTERVAL_S)
    return accepted, tuple(rejected), interval_s


class HubClient:
    """The two hub calls. Never raises for HTTP or network trouble: see ``HubReply``."""

    def __init__(self, pool: Pool, hub_url: str, agent_id: str,
                 token: Secret | None, timeout_s: float = 10.0) -> None:
        self.pool = pool
        self.hub_url = hub_url.rstrip("/")
        self.agent_id = agent_id
        self.token = token
        self.timeout_s = timeout_s

    def _headers(self) -> dict[str, str] | None:
        """The headers with auth; None if the token cannot be sent in one (CR, LF or
        other characters outside printable ASCII)."""
        if self.token is None:
            return dict(HEADERS)
        value = self.token.reveal()
        if not value.isascii() or not value.isprintable():
            return None
        return {**HEADERS, "Authorization": f"Bearer {value}"}

    async def _call(self, method: str, url: str, payload: dict[str, Any] | None,
                    timeout_s: float, connect_timeout_s: float) -> HubReply:
        headers = self._headers()
        if headers is None:  # never echo the token, not even in an error
            return HubReply(AUTH, detail="the token has characters an HTTP header cannot carry")
        data = b""
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        try:
            status, body = await fetch(self.pool, method, url, timeout_s=timeout_s,
                                       connect_timeout_s=connect_timeout_s, headers=headers,
                                       body=data, max_bytes=MAX_REPLY_BYTES)
        except TRANSPORT_ERRORS as exc:
            return HubReply(UNAVAILABLE, detail=describe_error(exc))
        if 200 <= status < 300:
            try:
                doc = json.loads(body) if body else None
            except ValueError:
                doc = None
            accepted, rejected, interval_s = parse_reply(doc)
            return HubReply(OK, status, f"HTTP {status}", accepted, rejected, interval_s)
        detail = _error_detail(status, body)
        if status in (401, 403):
            return HubReply(AUTH, status, detail)
        if 400 <= status < 500 and status not in (408, 429):
            return HubReply(REFUSED, status, detail)
        return HubReply(UNAVAILABLE, status, detail)

    async def heartbeat(self, payload: dict[str, Any]) -> HubReply:
        return await self._call("POST", f"{self.hub_url}{HEARTBEAT_PATH}", payload,
                                self.timeout_s, min(self.timeout_s, 5.0))

    async def deregister(self, timeout_s: float = 5.0) -> HubReply:
        url = f"{self.hub_url}{AGENTS_PATH}{quote(self.agent_id, safe='')}"
        return await self._call("DELETE", url, None, timeout_s, min(timeout_s, 3.0))
