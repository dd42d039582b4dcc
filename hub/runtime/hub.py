"""The hub's live state: config, registry, metrics and proxy, and config reload.

aiohttp freezes app state once serving starts, so everything that a reload may
change lives on this one object, read per request as ``app[HUB].config``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from hub.admission.limiter import Admission
from hub.auth.keys import KeyRing
from hub.auth.principal import Principal, require_scope
from hub.auth.verifier import Verifier
from hub.cache.cache import ResponseCache, SecondLevel
from hub.cache.metrics import CacheCollector
from hub.config.schema import Config
from hub.fleet.agents import AgentBook
from hub.fleet.registry import Registry
from hub.forward.proxy import Proxy
from hub.ledger.ledger import Ledger
from hub.ledger.metrics import LedgerCollector
from hub.observe.agents import AgentHeartbeatCollector
from hub.observe.metrics import Metrics
from hub.observe.trace import Tracer
from hub.state.metrics import StateCollector
from hub.state.shared import SharedState
from hub.upstream import Pool

log = logging.getLogger("spokehub.runtime")

# Who a request is when auth is off: one tenant, every scope.
ANONYMOUS = Principal(sub="anonymous", tenant="default",
                      scopes=frozenset({"infer", "admin", "agent"}), models=None,
                      priorities=None)


def security_warnings(config: Config) -> list[str]:
    """What an operator must know about this config's exposure, logged at start and
    after a reload that changes it."""
    out: list[str] = []
    if not config.auth.enabled:
        host = config.listen.host
        where = "only this machine" if host in ("127.0.0.1", "::1", "localhost") else \
            f"every host that can reach {host}:{config.listen.port}"
        out.append(f"AUTH IS OFF (auth.enabled: false): {where} can run inference, drain "
                   f"workers and reload the config without a token. Turn auth on for "
                   f"anything but local development.")
        if config.agents.enabled:
            out.append("AGENT REGISTRATION IS ON WITHOUT AUTH (agents.enabled: true, "
                       "auth.enabled: false): anyone who can reach the hub can register "
                       "workers and draw traffic for any model inside "
                       "agents.allowed_networks.")
        else:
            out.append("agent registration is off because auth is off; heartbeats get "
                       "404 (set agents.enabled: true to allow it anyway)")
    return out


def build_verifier(config: Config) -> Verifier | None:
    """Read the configured keys (files, env) into a fresh verifier; raises ConfigError."""
    if not config.auth.enabled:
        return None
    return Verifier(config.auth, KeyRing.load(config.auth))


class Hub:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.registry = Registry(config.workers, healthy_after=config.health.healthy_after,
                                 unhealthy_after=config.health.unhealthy_after)
        self._proxy: Proxy | None = None
        self.pool: Pool | None = None  # the hot path's upstream pool, once started
        self.metrics = Metrics(self.registry, lambda: self._proxy, config.metrics)
        self.agents = AgentBook(self.registry, config.agents, aliases=config.aliases)
        self.metrics.prom.register(AgentHeartbeatCollector(self.agents))
        self.tracer = Tracer(config.tracing)
        self.admission = Admission(config.admission)
        self.verifier = build_verifier(config)
        self.cache = ResponseCache.build(config.response_cache)  # None when off
        self.cache_remote: SecondLevel | None = None  # hubs sharing the cache (Redis)
        self.metrics.prom.register(CacheCollector(lambda: self.cache))
        self.ledger = Ledger(config.prices, config.ledger, config.budgets,
                             tenant_label=self.metrics.tokens.tenant_label)
        self.metrics.prom.register(LedgerCollector(self.ledger))
        # Shared with other hubs through Redis (state.backend: redis); None: this hub alone.
        self.shared = SharedState(config.state) if config.state.shared else None
        if self.shared is not None:
            self.metrics.prom.register(StateCollector(self.shared.link))
            self.agents.hold_shared = self.shared.holding
        for warning in security_warnings(config):
            log.warning("%s", warning)

    def authorize(self, authorization: str | None, scope: str) -> Principal:
        """The caller's principal, checked for ``scope``; raises a 401/403 HubError."""
        verifier = self.verifier
        if verifier is None:
            return ANONYMOUS
        principal = verifier.verify(authorization)
        require_scope(principal, scope)
        return principal

    def authorize_path(self, path: str, authorization: str | None) -> None:
        """Health and metrics endpoints: open if listed in ``auth.public_paths``, else admin."""
        if path not in self.config.auth.public_paths:
            self.authorize(authorization, "admin")

    @property
    def proxy(self) -> Proxy:
        assert self._proxy is not None, "upstream context not started"
        return self._proxy

    @proxy.setter
    def proxy(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self.registry.on_remove.append(proxy.forget)
        self.registry.on_health.append(proxy.health_changed)

    def apply(self, new: Config) -> list[str]:
        """Switch to ``new`` without touching in-flight requests; returns what changed.

        Keys are read first: if that fails (ConfigError), nothing has changed.
        """
        verifier = build_verifier(new)  # always fresh: a rotated key file needs a new cache
        cache = ResponseCache.build(new.response_cache, self.cache)  # may raise, too
        old = self.config
        changes: list[str] = []
        if new.listen != old.listen:
            changes.append("listen: needs a restart to take effect (kept the old address)")
            new = replace(new, listen=old.listen)
        if (new.state.backend, new.state.url_env, new.state.namespace) != (
                old.state.backend, old.state.url_env, old.state.namespace):
            changes.append("state: backend, url_env and namespace need a restart "
                           "(kept the old ones)")
            new = replace(new, state=replace(new.state, backend=old.state.backend,
                                             url_env=old.state.url_env,
                                             namespace=old.state.namespace))
        old_specs = {w.name: w for w in old.workers}
        new_specs = {w.name: w for w in new.workers}
        for name in old_specs.keys() - new_specs.keys():
            worker = self.registry.get(name)
            if worker is not None and worker.source == "config":
                self.registry.remove(name)
                changes.append(f"worker {name}: removed")
        for name, spec in new_specs.items():
            worker = self.registry.get(name)
            if worker is None:
                self.registry.add(spec)
                changes.append(f"worker {name}: added")
            elif worker.source != "config":
                changes.append(f"worker {name}: name taken by {worker.source}; not added")
            elif worker.spec != spec:
                self.registry.replace_spec(worker, spec)
                changes.append(f"worker {name}: updated")
        self.verifier = verifier
        self.cache = cache
        if cache is not None:
            cache.remote = self.cache_remote  # a rebuilt cache keeps the shared level
        if new.admission != old.admission:
            self.admission = Admission(new.admission, remote=self.admission.remote)
        for name in self.agents.reconfigure(new.agents, new.aliases):
            changes.append(f"worker {name}: removed (agents may no longer register it)")
        warnings = security_warnings(new)
        if warnings != security_warnings(old):
            for warning in warnings:
                log.warning("%s", warning)
        self.metrics.tokens.configure(new.metrics)
        if new.ledger != old.ledger:
            changes.append("ledger: needs a restart to take effect (kept the old file)")
            new = replace(new, ledger=old.ledger)
        self.ledger.configure(new.prices, new.ledger, new.budgets)
        if new.tracing != old.tracing:
            self.tracer.close()
            self.tracer = Tracer(new.tracing)
        self.registry.healthy_after = new.health.healthy_after
        self.registry.unhealthy_after = new.health.unhealthy_after
        for section in ("auth", "admission", "routing", "health", "timeouts", "limits",
                        "aliases", "agents", "resilience", "metrics", "tracing",
                        "response_cache", "prices", "budgets", "state", "spill"):
            if getattr(new, section) != getattr(old, section):
                changes.append(f"{section}: updated")
        self.config = new
        if self.pool is not None:
            self.pool.keepalive_s = new.timeouts.keepalive_s
            self.pool.max_body_bytes = new.limits.max_upstream_body_bytes
        if self._proxy is not None:
            self._proxy.configure(new)
        return changes

    def __repr__(self) -> str:
        return f"<Hub {self.registry!r} policy={self.config.routing.policy}>"
