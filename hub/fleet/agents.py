"""Workers registered by agents: heartbeats in, registry entries out.

An agent owns the workers it registered (``source = "agent:<id>"``). It can never
overwrite a worker from the YAML config or another agent's worker. A worker whose
agent goes quiet for ``agents.ttl_s`` gets no traffic; after ``remove_after_s`` it
is forgotten. Agent workers are persisted (atomic JSON) so a hub restart keeps
them until their TTL passes.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.config.kit import ConfigError
from hub.config.schema import Agents
from hub.config.workers import parse_worker
from hub.errors import BadRequest, Forbidden
from hub.fleet.persist import read_json, write_json_atomic
from hub.fleet.registry import Registry, Worker

log = logging.getLogger("spokehub.agents")

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
MAX_WORKERS_PER_AGENT = 64


@dataclass(slots=True)
class HeartbeatResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def _num(value: object) -> float | None:
    """A finite number, or None (also for 1e400, which JSON parses to inf, and 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _names(value: object) -> frozenset[str] | None:
    if not isinstance(value, list):
        return None
    return frozenset(v for v in value if isinstance(v, str) and v)


class AgentBook:
    """Applies heartbeats to the registry and expires silent agents."""

    def __init__(self, registry: Registry, settings: Agents,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.hosts: dict[str, dict[str, Any]] = {}  # agent id -> last host report
        # agent id -> the token subject that registered it: while any of its workers is
        # registered, another agent token cannot report or deregister under that id.
        self.owners: dict[str, str] = {}

    def source(self, agent_id: str) -> str:
        return f"agent:{agent_id}"

    def _claim(self, agent_id: str, subject: str) -> None:
        owner = self.owners.get(agent_id)
        if owner is not None and owner != subject:
            source = self.source(agent_id)
            if any(w.source == source for w in self.registry):
                raise Forbidden(f"Agent id '{agent_id}' is registered with another agent "
                                f"token; use that token, or deregister it first",
                                param="agent_id")
        self.owners[agent_id] = subject

    def heartbeat(self, doc: object, subject: str = "anonymous") -> HeartbeatResult:
        if not isinstance(doc, dict):
            raise BadRequest("Heartbeat must be a JSON object")
        agent_id = doc.get("agent_id")
        if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
            raise BadRequest("'agent_id' must be 1-63 letters, digits or _.:-",
                             param="agent_id")
        workers = doc.get("workers", [])
        if not isinstance(workers, list) or len(workers) > MAX_WORKERS_PER_AGENT:
            raise BadRequest(f"'workers' must be a list of at most {MAX_WORKERS_PER_AGENT}",
                             param="workers")
        self._claim(agent_id, subject)
        source = self.source(agent_id)
        now = self.clock()
        host = doc.get("host")
        if isinstance(host, dict):
            self.hosts[agent_id] = host
        result = HeartbeatResult()
        reported: set[str] = set()
        changed = False
        for i, raw in enumerate(workers):
            name = raw.get("name") if isinstance(raw, dict) else None
            try:
                if not isinstance(raw, dict):
                    raise ConfigError(f"workers[{i}]: must be an object")
                spec = parse_worker({k: raw[k] for k in ("name", "url", "kind") if k in raw},
                                    f"workers[{i}]")
            except ConfigError as exc:
                result.rejected.append({"name": str(name), "reason": str(exc)})
                continue
            existing = self.registry.get(spec.name)
            if existing is not None and existing.source != source:
                owner = "the hub config" if existing.source == "config" else "another agent"
                result.rejected.append({"name": spec.name,
                                        "reason": f"name is taken by {owner}"})
                continue
            if existing is None:
                existing = self.registry.add(spec)
                existing.source = source
                changed = True
                log.warning("agent %s registered worker %s at %s", agent_id, spec.name,
                            spec.url)
            elif existing.spec != spec:
                self.registry.replace_spec(existing, spec)
                changed = True
            self._apply_capacity(existing, raw, now)
            reported.add(spec.name)
            result.accepted.append(spec.name)
        for worker in self.registry:
            if worker.source == source and worker.name not in reported:
                self.registry.remove(worker.name)
                changed = True
                log.warning("agent %s no longer reports worker %s; removed", agent_id,
                            worker.name)
        if changed:
            self.save()
        return result

    def _apply_capacity(self, worker: Worker, raw: dict[str, Any], now: float) -> None:
        worker.last_seen = now
        if worker.agent_stale:
            worker.agent_stale = False
            log.warning("worker %s: its agent is back", worker.name)
        models = _names(raw.get("models"))
        if models is not None:
            worker.discovered_models = models | (_names(raw.get("loaded_models")) or frozenset())
        loaded = _names(raw.get("loaded_models"))
        if loaded is not None:
            worker.loaded_models = loaded
        total, busy = _num(raw.get("slots_total")), _num(raw.get("slots_busy"))
        if total is not None and total >= 0:
            worker.slots_total = int(total)
            worker.slots_busy = int(busy) if busy is not None and busy >= 0 else None
        vram = _num(raw.get("vram_free_mb"))
        worker.vram_free_mb = vram if vram is not None and vram >= 0 else None
        if raw.get("healthy") is False:
            self.registry.mark_unreachable(worker, "agent reports the worker unhealthy")

    def deregister(self, agent_id: str, subject: str = "anonymous") -> list[str]:
        self._claim(agent_id, subject)
        self.owners.pop(agent_id, None)
        source = self.source(agent_id)
        removed = [w.name for w in self.registry if w.source == source]
        for name in removed:
            self.registry.remove(name)
        self.hosts.pop(agent_id, None)
        if removed:
            log.warning("agent %s deregistered: removed %s", agent_id, ", ".join(removed))
            self.save()
        return removed

    def expire(self) -> None:
        """Mark workers of silent agents stale, forget them later. Cheap; run every second."""
        now = self.clock()
        removed = False
        for worker in self.registry:
            if worker.source == "config" or worker.last_seen is None:
                continue
            age = now - worker.last_seen
            if age > self.settings.remove_after_s:
                self.registry.remove(worker.name)
                removed = True
                log.warning("worker %s: no heartbeat for %.0fs; removed", worker.name, age)
            elif age > self.settings.ttl_s and not worker.agent_stale:
                worker.agent_stale = True
                log.warning("worker %s: no heartbeat for %.0fs; no traffic until its agent "
                            "reports again", worker.name, age)
        if removed:
            self.save()

    # -- persistence -------------------------------------------------------------
    def save(self) -> None:
        path = self.settings.state_file
        if not path:
            return
        doc = {"workers": [
            {"name": w.name, "url": w.url, "kind": w.spec.kind, "source": w.source,
             "models": sorted(w.discovered_models), "last_seen": w.last_seen,
             "owner": self.owners.get(w.source.removeprefix("agent:"))}
            for w in self.registry if w.source != "config"]}
        try:
            write_json_atomic(path, doc)
        except OSError as exc:
            log.error("could not persist agent workers to %s: %s", path, exc)

    def load(self) -> int:
        """Re-add persisted agent workers that have not passed ``remove_after_s``."""
        path = self.settings.state_file
        doc = read_json(path) if path else None
        if not isinstance(doc, dict) or not isinstance(doc.get("workers"), list):
            return 0
        now = self.clock()
        loaded = 0
        for raw in doc["workers"]:
            try:
                spec = parse_worker({k: raw[k] for k in ("name", "url", "kind")}, "state")
                source, last_seen = str(raw["source"]), float(raw["last_seen"])
            except (ConfigError, KeyError, TypeError, ValueError):
                continue
            if (not source.startswith("agent:") or now - last_seen > self.settings.remove_after_s
                    or self.registry.get(spec.name) is not None):
                continue
            worker = self.registry.add(spec)
            worker.source = source
            worker.last_seen = last_seen
            worker.discovered_models = _names(raw.get("models")) or frozenset()
            worker.agent_stale = now - last_seen > self.settings.ttl_s
            owner = raw.get("owner")
            if isinstance(owner, str):
                self.owners.setdefault(source.removeprefix("agent:"), owner)
            loaded += 1
        if loaded:
            log.warning("restored %d agent workers from %s", loaded, path)
        return loaded
