"""Workers registered by agents: heartbeats in, registry entries out.

An agent token is trusted with one thing: reporting the workers of its own box. So
the hub names each worker itself (``<agent_id>-<kind>-<port>``; a name the agent
sends is only a label), owns the worker under ``source = "agent:<id>"``, and checks
every heartbeat against :mod:`hub.fleet.agent_policy`: URLs inside
``agents.allowed_networks`` and without credentials, models allowed by the token's
``models`` claim and not an alias (unless ``agents.alias_targets``), plausible slot
and VRAM figures, at most ``agents.max_ids_per_token`` agent ids per token subject and
``agents.max_workers`` agent workers in all. The models an agent reports are pinned
on the worker, so the prober's discovery cannot widen them.

A worker whose agent goes quiet for ``agents.ttl_s`` gets no traffic; after
``remove_after_s`` it is forgotten, and so is an agent id without workers. Agent
workers are persisted (atomic JSON) so a hub restart keeps them until their TTL
passes.

Several hubs share agent workers (``state.backend: redis``): every accepted heartbeat
is handed to ``on_report`` as a *report* (the agent's own words for the workers that
were accepted, its token subject and models claim, when it was seen), and reports
from other hubs come back through :meth:`AgentBook.apply_shared`, which checks them
exactly like a heartbeat (URLs, networks, models, ownership, limits): the store is
trusted no more than an agent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hub.auth.principal import Principal
from hub.config.schema import Agents
from hub.config.workers import WorkerSpec
from hub.errors import BadRequest, Forbidden, HubError
from hub.fleet.agent_policy import (
    MAX_HOSTNAMES_PER_HEARTBEAT,
    Capacity,
    Rejected,
    ResolveFailed,
    Resolver,
    TooManyAgentIds,
    TooManyAgentWorkers,
    WorkerRefused,
    address_problem,
    check_addresses,
    check_capacity,
    check_kind,
    check_worker_url,
    filter_models,
    host_report,
    label,
    literal_address,
    model_names,
    printable,
    redact_url,
    url_host,
    worker_name,
)
from hub.fleet.persist import read_json, write_json_atomic
from hub.fleet.registry import Registry, Worker

log = logging.getLogger("spokehub.agents")

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
MAX_WORKERS_PER_AGENT = 64


@dataclass(slots=True)
class HeartbeatResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class AgentRecord:
    owner: str  # the token subject that reports this agent id
    last_seen: float
    host: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)  # worker name -> the agent's name
    heard: bool = True  # reported since this hub process started (False: from the state file)
    shared: bool = False  # last heard through another hub (state.backend: redis)


@dataclass(slots=True)
class _Entry:
    """One worker of a heartbeat that passed the checks so far."""

    index: int
    spec: WorkerSpec
    label: str | None
    capacity: Capacity
    loaded: frozenset[str]
    healthy: object
    dropped: str = ""  # models left out, for the log


def _list(names: frozenset[str], limit: int = 5) -> str:
    shown = sorted(names)
    text = ", ".join(repr(printable(n)) for n in shown[:limit])
    return text + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


class AgentBook:
    """Applies heartbeats to the registry and expires silent agents."""

    def __init__(self, registry: Registry, settings: Agents,
                 clock: Callable[[], float] = time.time, *,
                 aliases: Mapping[str, str] | None = None,
                 resolver: Resolver | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.aliases: Mapping[str, str] = aliases or {}
        self.clock = clock
        self.resolver = resolver or Resolver()
        # agent id -> who reports it. While any of its workers is registered, another
        # token subject cannot report or deregister under that id.
        self.records: dict[str, AgentRecord] = {}
        self._held: Counter[str] = Counter()  # token subject -> agent ids it holds
        self._refusals: dict[str, str] = {}  # agent id -> the last refusal logged
        # Sharing with other hubs: the last report per agent id (heard here or from
        # another hub), and who wants to hear of new ones and of deregistrations.
        self.reports: dict[str, dict[str, Any]] = {}
        self.on_report: list[Callable[[dict[str, Any]], None]] = []
        self.on_deregister: list[Callable[[str, str], None]] = []  # (agent id, subject)
        # True while the shared store is down: agents heard through other hubs then
        # keep their workers (the last snapshot; probes still check them), since their
        # heartbeats cannot reach this hub until it is back.
        self.hold_shared: Callable[[], bool] = lambda: False

    def source(self, agent_id: str) -> str:
        return f"agent:{agent_id}"

    def _has_workers(self, agent_id: str) -> bool:
        source = self.source(agent_id)
        return any(w.source == source for w in self.registry)

    # -- who may report an agent id -------------------------------------------------
    def _check_claim(self, agent_id: str, subject: str) -> None:
        rec = self.records.get(agent_id)
        if rec is not None and rec.owner == subject:
            return
        if rec is not None and self._has_workers(agent_id):
            raise Forbidden(f"Agent id '{agent_id}' is registered with another agent "
                            f"token; use that token, or deregister it first",
                            param="agent_id")
        limit = self.settings.max_ids_per_token
        if self._held[subject] >= limit:
            raise TooManyAgentIds(
                f"This agent token already reports {self._held[subject]} agent ids, the "
                f"most one token may (agents.max_ids_per_token: {limit}); deregister one "
                f"(DELETE /v1/agents/ID), wait for a silent one to be forgotten "
                f"(agents.remove_after_s), or give each box its own token",
                param="agent_id")

    def _claim(self, agent_id: str, subject: str, now: float) -> AgentRecord:
        self._check_claim(agent_id, subject)
        rec = self.records.get(agent_id)
        if rec is None or rec.owner != subject:
            self._forget(agent_id)
            rec = self.records[agent_id] = AgentRecord(owner=subject, last_seen=now)
            self._held[subject] += 1
        return rec

    def _forget(self, agent_id: str) -> None:
        self.reports.pop(agent_id, None)
        rec = self.records.pop(agent_id, None)
        if rec is not None:
            self._held[rec.owner] -= 1
            if self._held[rec.owner] <= 0:
                del self._held[rec.owner]

    def alias_names(self) -> frozenset[str]:
        """Models agents may not serve: aliases and their targets (agents.alias_targets)."""
        if self.settings.alias_targets:
            return frozenset()
        return frozenset(self.aliases) | frozenset(self.aliases.values())

    # -- heartbeats -------------------------------------------------------------------
    async def heartbeat(self, doc: object, principal: Principal) -> HeartbeatResult:
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
        self._check_claim(agent_id, principal.sub)
        result = HeartbeatResult()
        try:
            entries = self._entries(agent_id, workers, principal.models, result)
            entries = await self._check_networks(entries, result)
        except WorkerRefused as exc:
            self._note_refusal(agent_id, principal.sub, exc.message)
            raise
        self._refusals.pop(agent_id, None)
        now = self.clock()
        self._apply(agent_id, principal.sub, doc, entries, result, now=now)
        self._report(agent_id, principal, doc, entries, result, now=now)
        return result

    def _report(self, agent_id: str, principal: Principal, doc: dict[str, Any],
                entries: list[_Entry], result: HeartbeatResult, *, now: float) -> None:
        """Hand the accepted part of a heartbeat to ``on_report`` (other hubs)."""
        accepted = set(result.accepted)
        workers: list[Any] = doc.get("workers", [])
        report = {
            "agent_id": agent_id, "owner": principal.sub, "last_seen": now,
            "token_models": None if principal.models is None else sorted(principal.models),
            "host": host_report(doc.get("host")),
            "workers": [workers[e.index] for e in entries if e.spec.name in accepted]}
        self.reports[agent_id] = report
        for listener in self.on_report:
            listener(report)

    async def apply_shared(self, report: object) -> bool:
        """Apply another hub's report of a heartbeat, checked like a heartbeat; False
        if it is malformed, older than what this hub knows, or refused (logged once)."""
        parsed = _parse_report(report)
        if parsed is None:
            return False
        agent_id, owner, models, last_seen, doc = parsed
        now = self.clock()
        last_seen = min(last_seen, now)  # another host's clock may run ahead
        rec = self.records.get(agent_id)
        if now - last_seen > self.settings.remove_after_s or (
                rec is not None and rec.owner == owner and rec.last_seen >= last_seen):
            return False
        result = HeartbeatResult()
        try:
            self._check_claim(agent_id, owner)
            entries = self._entries(agent_id, doc["workers"], models, result)
            entries = await self._check_networks(entries, result)
            self._apply(agent_id, owner, doc, entries, result, now=last_seen)
            self.records[agent_id].shared = True
        except HubError as exc:
            self._note_refusal(agent_id, owner, f"(shared by another hub) {exc.message}")
            return False
        stale = now - last_seen > self.settings.ttl_s
        source = self.source(agent_id)
        for worker in self.registry:
            if worker.source == source:
                worker.agent_stale = stale
        self.reports[agent_id] = dict(report)  # type: ignore[call-overload]
        return True

    def _note_refusal(self, agent_id: str, subject: str, message: str) -> None:
        """Log a refused heartbeat once per agent and reason, not every few seconds."""
        if self._refusals.get(agent_id) == message:
            return
        if len(self._refusals) >= 1024:
            self._refusals.clear()
        self._refusals[agent_id] = message
        log.warning("refused a heartbeat of agent %s (token subject %s): %s", agent_id,
                    printable(subject), message)

    def _entries(self, agent_id: str, workers: list[Any], token_models: frozenset[str] | None,
                 result: HeartbeatResult) -> list[_Entry]:
        """The workers that pass the checks needing no DNS; the rest into ``rejected``."""
        aliased = self.alias_names()
        entries: list[_Entry] = []
        names: dict[str, int] = {}
        for i, raw in enumerate(workers):
            where = f"workers[{i}]"
            given = label(raw.get("name")) if isinstance(raw, dict) else None
            name = given or where
            try:
                if not isinstance(raw, dict):
                    raise Rejected(f"{where}: must be an object")
                url = check_worker_url(raw.get("url"), f"{where}.url")
                kind = check_kind(raw.get("kind"), f"{where}.kind")
                name = worker_name(agent_id, kind, url)
                if name in names:
                    raise Rejected(f"{where}: same kind and port as workers[{names[name]}] "
                                   f"(both would be {name}); report each worker once")
                capacity = check_capacity(raw, where)
                loaded = model_names(raw.get("loaded_models"), f"{where}.loaded_models")
                models = model_names(raw.get("models"), f"{where}.models") | loaded
                verdict = filter_models(models, token_models, aliased)
                dropped = []
                if verdict.not_in_token:
                    dropped.append(f"not allowed by this agent token's models claim: "
                                   f"{_list(verdict.not_in_token)}")
                if verdict.alias_targets:
                    dropped.append(f"an alias or alias target (agents.alias_targets is "
                                   f"off): {_list(verdict.alias_targets)}")
                if not verdict.allowed:
                    why = "; ".join(dropped) or "it reports none"
                    raise Rejected(f"{where}: no model this agent may serve ({why})")
            except Rejected as exc:
                result.rejected.append({"name": name, "reason": str(exc)})
                continue
            names[name] = i
            if dropped:
                result.warnings.append({"name": name,
                                        "reason": "models dropped: " + "; ".join(dropped)})
            spec = WorkerSpec(name=name, url=url, kind=kind,
                              models=tuple(sorted(verdict.allowed)))
            entries.append(_Entry(i, spec, given, capacity, loaded & verdict.allowed,
                                  raw.get("healthy"), "; ".join(dropped)))
        return entries

    async def _check_networks(self, entries: list[_Entry],
                              result: HeartbeatResult) -> list[_Entry]:
        """Every worker's host must resolve into agents.allowed_networks. A refused
        address refuses the whole heartbeat (WorkerRefused, a 400); a name that does
        not resolve only rejects its worker."""
        allowed = self.settings.allowed_networks
        hostnames: list[str] = []
        for e in entries:
            host = url_host(e.spec.url)
            addr = literal_address(host)
            if addr is not None:
                check_addresses(e.spec.url, [addr], allowed, f"workers[{e.index}].url")
            elif host not in hostnames:
                hostnames.append(host)
        if not hostnames:
            return entries
        lookups = await asyncio.gather(*(self.resolver.resolve(h)
                                         for h in hostnames[:MAX_HOSTNAMES_PER_HEARTBEAT]),
                                       return_exceptions=True)
        resolved = dict(zip(hostnames, lookups, strict=False))
        kept = []
        for e in entries:
            host = url_host(e.spec.url)
            where = f"workers[{e.index}].url"
            if literal_address(host) is not None:
                kept.append(e)
                continue
            found = resolved.get(host)
            if found is None:
                reason = (f"{where}: at most {MAX_HOSTNAMES_PER_HEARTBEAT} different host "
                          f"names per heartbeat")
            elif isinstance(found, ResolveFailed):
                reason = f"{where}: host {printable(host)!r}: {found}"
            elif isinstance(found, BaseException):
                raise found
            else:
                check_addresses(e.spec.url, found, allowed, where)
                kept.append(e)
                continue
            result.rejected.append({"name": e.spec.name, "reason": reason})
        return kept

    def _apply(self, agent_id: str, subject: str, doc: dict[str, Any], entries: list[_Entry],
               result: HeartbeatResult, *, now: float) -> None:
        rec = self._claim(agent_id, subject, now)  # again: other heartbeats ran meanwhile
        rec.last_seen = now
        rec.heard = True
        rec.shared = False
        rec.host = host_report(doc.get("host"))
        rec.labels = {e.spec.name: e.label for e in entries
                      if e.label is not None and e.label != e.spec.name}
        source = self.source(agent_id)
        others = sum(1 for w in self.registry if w.source not in ("config", source))
        accepted: list[tuple[int, str]] = []
        full: list[_Entry] = []
        changed = False
        # Workers this agent already has keep their place; new ones need room.
        known = [e for e in entries if self.registry.get(e.spec.name) is not None]
        new = [e for e in entries if self.registry.get(e.spec.name) is None]
        for e in known + new:
            existing = self.registry.get(e.spec.name)
            if existing is not None and existing.source != source:
                owner = "the hub config" if existing.source == "config" else existing.source
                result.rejected.append({"name": e.spec.name,
                                        "reason": f"name is taken by {owner}"})
                continue
            if existing is None:
                if others + len(accepted) >= self.settings.max_workers:
                    full.append(e)
                    continue
                existing = self.registry.add(e.spec)
                existing.source = source
                changed = True
                log.warning("agent %s registered worker %s at %s%s", agent_id, e.spec.name,
                            redact_url(e.spec.url),
                            f" (models dropped: {e.dropped})" if e.dropped else "")
            elif existing.spec != e.spec:
                self.registry.replace_spec(existing, e.spec)
                changed = True
            self._apply_capacity(existing, e, now)
            accepted.append((e.index, e.spec.name))
        limit = self.settings.max_workers
        for e in full:
            result.rejected.append({"name": e.spec.name, "reason": (
                f"the hub holds the most agent workers it accepts (agents.max_workers: "
                f"{limit})")})
        reported = {name for _, name in accepted}
        for worker in self.registry:
            if worker.source == source and worker.name not in reported:
                self.registry.remove(worker.name)
                changed = True
                log.warning("agent %s no longer reports worker %s; removed", agent_id,
                            worker.name)
        result.accepted = [name for _, name in sorted(accepted)]
        if changed:
            self.save()
        if full and not accepted:
            log.warning("agent %s: %d workers refused, the hub holds agents.max_workers "
                        "(%d) agent workers", agent_id, len(full), limit)
            raise TooManyAgentWorkers(
                f"The hub already holds {others} agent workers, the most it accepts "
                f"(agents.max_workers: {limit}); retry later",
                headers={"Retry-After": f"{max(1, round(self.settings.ttl_s))}"})

    def _apply_capacity(self, worker: Worker, entry: _Entry, now: float) -> None:
        worker.last_seen = now
        if worker.agent_stale:
            worker.agent_stale = False
            log.warning("worker %s: its agent is back", worker.name)
        worker.loaded_models = entry.loaded
        cap = entry.capacity
        if cap.slots_total is not None:  # else keep what the prober saw
            worker.slots_total = cap.slots_total
            worker.slots_busy = cap.slots_busy
        worker.vram_free_mb = cap.vram_free_mb
        if entry.healthy is False:
            self.registry.mark_unreachable(worker, "agent reports the worker unhealthy")

    def reconfigure(self, settings: Agents, aliases: Mapping[str, str]) -> list[str]:
        """New settings (a config reload). Agent workers at an address the new
        allowed_networks refuse, or left with no model once aliases are taken out, go
        at once rather than at their agent's next heartbeat; returns their names."""
        self.settings = settings
        self.aliases = aliases
        blocked = self.alias_names()
        removed: list[str] = []
        for w in self.registry:
            if w.source == "config":
                continue
            addr = literal_address(url_host(w.url))
            models = frozenset(w.spec.models) - blocked
            if not models or (addr is not None
                              and address_problem(addr, settings.allowed_networks)):
                self.registry.remove(w.name)
                removed.append(w.name)
            elif models != frozenset(w.spec.models):
                self.registry.replace_spec(w, replace(w.spec, models=tuple(sorted(models))))
        if removed:
            log.warning("agent workers no longer allowed by the new config, removed: %s",
                        ", ".join(removed))
            self.save()
        return removed

    def deregister(self, agent_id: str, subject: str = "anonymous", *,
                   share: bool = True) -> list[str]:
        """Forget an agent id and its workers; ``share``: tell other hubs (False when
        the deregistration came from one)."""
        rec = self.records.get(agent_id)
        if rec is not None and rec.owner != subject and self._has_workers(agent_id):
            raise Forbidden(f"Agent id '{agent_id}' is registered with another agent "
                            f"token; use that token, or deregister it first",
                            param="agent_id")
        self._forget(agent_id)
        source = self.source(agent_id)
        removed = [w.name for w in self.registry if w.source == source]
        for name in removed:
            self.registry.remove(name)
        if removed:
            log.warning("agent %s deregistered: removed %s", agent_id, ", ".join(removed))
            self.save()
        if share:
            for listener in self.on_deregister:
                listener(agent_id, subject)
        return removed

    def expire(self) -> None:
        """Mark workers of silent agents stale, forget them later. Cheap; run every second."""
        now = self.clock()
        removed = False
        held = self.hold_shared()
        for worker in self.registry:
            if worker.source == "config" or worker.last_seen is None:
                continue
            if held and self._heard_elsewhere(worker.source):
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
        live = {w.source for w in self.registry}
        for agent_id, rec in list(self.records.items()):
            if (now - rec.last_seen > self.settings.remove_after_s and not (held and rec.shared)
                    and self.source(agent_id) not in live):
                self._forget(agent_id)
        if removed:
            self.save()

    def _heard_elsewhere(self, source: str) -> bool:
        rec = self.records.get(source.removeprefix("agent:"))
        return rec is not None and rec.shared

    # -- persistence -------------------------------------------------------------
    def save(self) -> None:
        path = self.settings.state_file
        if not path:
            return
        doc = {"workers": [
            {"name": w.name, "url": w.url, "kind": w.spec.kind, "source": w.source,
             "models": sorted(w.spec.models), "last_seen": w.last_seen,
             "owner": rec.owner if (rec := self.records.get(w.source.removeprefix("agent:")))
             else None, "shared": rec is not None and rec.shared}
            for w in self.registry if w.source != "config"]}
        try:
            write_json_atomic(path, doc)
        except OSError as exc:
            log.error("could not persist agent workers to %s: %s", path, exc)

    def _restore(self, raw: object, now: float) -> WorkerSpec | None:
        """A persisted worker, checked again against the current settings (the file
        may predate them); None to skip it. Host names are checked again with the
        agent's next heartbeat."""
        if not isinstance(raw, dict):
            return None
        source, last_seen = raw.get("source"), raw.get("last_seen")
        if (not isinstance(source, str) or not source.startswith("agent:")
                or not isinstance(last_seen, int | float) or isinstance(last_seen, bool)
                or now - last_seen > self.settings.remove_after_s):
            return None
        agent_id = source.removeprefix("agent:")
        try:
            url = check_worker_url(raw.get("url"), "url")
            kind = check_kind(raw.get("kind"), "kind")
            models = model_names(raw.get("models"), "models") - self.alias_names()
        except (Rejected, WorkerRefused):
            return None
        addr = literal_address(url_host(url))
        if (not AGENT_ID_RE.match(agent_id) or not models or (
                addr is not None and address_problem(addr, self.settings.allowed_networks))):
            return None
        return WorkerSpec(name=worker_name(agent_id, kind, url), url=url, kind=kind,
                          models=tuple(sorted(models)))

    def load(self) -> int:
        """Re-add persisted agent workers that have not passed ``remove_after_s``."""
        path = self.settings.state_file
        doc = read_json(path) if path else None
        if not isinstance(doc, dict) or not isinstance(doc.get("workers"), list):
            return 0
        now = self.clock()
        loaded = 0
        for raw in doc["workers"]:
            spec = self._restore(raw, now)
            agents = sum(1 for w in self.registry if w.source != "config")
            if (spec is None or self.registry.get(spec.name) is not None
                    or agents >= self.settings.max_workers):
                continue
            source, last_seen = str(raw["source"]), float(raw["last_seen"])
            worker = self.registry.add(spec)
            worker.source = source
            worker.last_seen = last_seen
            shared = raw.get("shared") is True  # heard through another hub
            worker.agent_stale = (now - last_seen > self.settings.ttl_s
                                  and not (shared and self.hold_shared()))
            agent_id = source.removeprefix("agent:")
            owner = raw.get("owner")
            if isinstance(owner, str) and agent_id not in self.records:
                self.records[agent_id] = AgentRecord(owner=owner, last_seen=last_seen,
                                                     heard=False, shared=shared)
                self._held[owner] += 1
            loaded += 1
        if loaded:
            log.warning("restored %d agent workers from %s", loaded, path)
        return loaded


def _parse_report(report: object) -> tuple[str, str, frozenset[str] | None, float,
                                           dict[str, Any]] | None:
    """(agent id, owner, token models, last seen, the heartbeat part) of a shared
    report, or None if any of it has the wrong shape."""
    if not isinstance(report, dict):
        return None
    agent_id, owner, models = (report.get("agent_id"), report.get("owner"),
                               report.get("token_models"))
    last_seen, workers = report.get("last_seen"), report.get("workers")
    if (not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id)
            or not isinstance(owner, str) or not 0 < len(owner) <= 256
            or isinstance(last_seen, bool) or not isinstance(last_seen, int | float)
            or not math.isfinite(last_seen)
            or not isinstance(workers, list) or len(workers) > MAX_WORKERS_PER_AGENT):
        return None
    if models is not None and (not isinstance(models, list)
                               or not all(isinstance(m, str) for m in models)):
        return None
    return (agent_id, owner, None if models is None else frozenset(models), float(last_seen),
            {"host": report.get("host"), "workers": workers})
