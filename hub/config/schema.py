"""YAML configuration, parsed once into frozen dataclasses.

Every validation error names the offending key (``workers[1].url: ...``) so an
operator can fix the file without reading a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hub.admission.limiter import AdmissionConfig, parse_admission
from hub.auth.config import AuthConfig, parse_auth
from hub.cache.config import ResponseCacheConfig, parse_response_cache
from hub.config.kit import ConfigError, Section, read_yaml
from hub.config.workers import WORKER_KINDS, WorkerSpec, parse_worker
from hub.fleet.agent_policy import DEFAULT_ALLOWED_NETWORKS, IPNetwork, parse_networks
from hub.forward.spill_config import SpillConfig, parse_spill
from hub.ledger.budgets import BudgetsConfig, parse_budgets
from hub.ledger.config import LedgerConfig, parse_ledger
from hub.ledger.prices import Prices, parse_prices
from hub.observe.settings import MetricsConfig, TracingConfig, parse_metrics, parse_tracing
from hub.resilience.breaker import BreakerConfig, parse_breaker
from hub.resilience.outlier import OutlierConfig, parse_outlier
from hub.resilience.retry_budget import RetryBudgetConfig, parse_retry_budget
from hub.routing.cache_aware import CacheAwareConfig, parse_cache_aware
from hub.routing.vram_weighted import VramWeightedConfig, parse_vram_weighted
from hub.state.config import StateConfig, parse_state

__all__ = [
    "ROUTING_POLICIES",
    "WORKER_KINDS",
    "Agents",
    "Config",
    "ConfigError",
    "Health",
    "Limits",
    "Listen",
    "Resilience",
    "Routing",
    "Timeouts",
    "WorkerSpec",
    "load_config",
    "parse_config",
    "parse_worker",
]

ROUTING_POLICIES = ("round_robin", "vram_weighted", "least_loaded", "cache_aware")


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class Routing:
    policy: str = "round_robin"
    max_attempts: int = 3
    retry_on_timeout: bool = False  # retry a timeout after the worker accepted the request
    vram_weighted: VramWeightedConfig = field(default_factory=VramWeightedConfig)
    cache_aware: CacheAwareConfig = field(default_factory=CacheAwareConfig)


@dataclass(frozen=True, slots=True)
class Resilience:
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    retry_budget: RetryBudgetConfig = field(default_factory=RetryBudgetConfig)


@dataclass(frozen=True, slots=True)
class Health:
    interval_s: float = 5.0
    timeout_s: float = 2.0
    unhealthy_after: int = 1
    healthy_after: int = 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts. CPU inference is slow, so the defaults are generous."""

    connect_s: float = 2.0
    first_byte_s: float = 120.0
    idle_s: float = 60.0
    total_s: float = 900.0
    # An idle pooled connection to a worker is closed after this long: below llama.cpp's
    # own 5 s, so a request never races the worker closing it (0 = no reuse).
    keepalive_s: float = 4.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_upstream_body_bytes: int = 16 << 20  # a worker's whole (non-stream) answer
    max_upload_bytes: int = 25 << 20  # multipart uploads (audio transcriptions)


@dataclass(frozen=True, slots=True)
class Agents:
    """Workers registered by agents' heartbeats (POST /v1/agents/heartbeat).

    ``enabled`` defaults to ``auth.enabled``: without auth anyone who can reach the hub
    could register workers, so that needs ``agents.enabled: true`` written out.
    """

    enabled: bool = False
    ttl_s: float = 15.0  # no heartbeat for this long: the worker gets no traffic
    remove_after_s: float = 600.0  # ... and after this long it is forgotten
    state_file: str | None = None  # persist agent workers here across hub restarts
    # Advertised worker URLs must resolve into these (every address of the host).
    allowed_networks: tuple[IPNetwork, ...] = field(
        default_factory=lambda: parse_networks(list(DEFAULT_ALLOWED_NETWORKS), "agents"))
    max_ids_per_token: int = 16  # agent ids one token subject may report at once
    max_workers: int = 256  # agent-registered workers in total
    alias_targets: bool = False  # may agent workers serve models that aliases point to?


@dataclass(frozen=True, slots=True)
class Config:
    listen: Listen = field(default_factory=Listen)
    auth: AuthConfig = field(default_factory=AuthConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    routing: Routing = field(default_factory=Routing)
    health: Health = field(default_factory=Health)
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    aliases: Mapping[str, str] = field(default_factory=dict)
    agents: Agents = field(default_factory=Agents)
    resilience: Resilience = field(default_factory=Resilience)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    spill: SpillConfig = field(default_factory=SpillConfig)
    response_cache: ResponseCacheConfig = field(default_factory=ResponseCacheConfig)
    prices: Prices = field(default_factory=Prices)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    workers: tuple[WorkerSpec, ...] = ()
    log_level: str = "info"
    shutdown_grace_s: float = 30.0


def _listen(s: Section) -> Listen:
    out = Listen(host=s.text("host", "127.0.0.1"), port=s.integer("port", 8080, lo=0, hi=65535))
    s.done()
    return out


def _routing(s: Section) -> Routing:
    out = Routing(policy=s.text("policy", "round_robin", choices=ROUTING_POLICIES),
                  max_attempts=s.integer("max_attempts", 3, lo=1, hi=10),
                  retry_on_timeout=s.flag("retry_on_timeout", False),
                  vram_weighted=parse_vram_weighted(s.get("vram_weighted"),
                                                    s.key("vram_weighted")),
                  cache_aware=parse_cache_aware(s.get("cache_aware"), s.key("cache_aware")))
    s.done()
    return out


def _resilience(s: Section) -> Resilience:
    out = Resilience(breaker=parse_breaker(s.get("breaker"), s.key("breaker")),
                     outlier=parse_outlier(s.get("outlier"), s.key("outlier")),
                     retry_budget=parse_retry_budget(s.get("retry_budget"),
                                                     s.key("retry_budget")))
    s.done()
    return out


def _health(s: Section) -> Health:
    out = Health(interval_s=s.number("interval_s", 5.0),
                 timeout_s=s.number("timeout_s", 2.0),
                 unhealthy_after=s.integer("unhealthy_after", 1, lo=1),
                 healthy_after=s.integer("healthy_after", 1, lo=1))
    s.done()
    return out


def _timeouts(s: Section) -> Timeouts:
    d = Timeouts()
    out = Timeouts(connect_s=s.number("connect_s", d.connect_s),
                   first_byte_s=s.number("first_byte_s", d.first_byte_s),
                   idle_s=s.number("idle_s", d.idle_s),
                   total_s=s.number("total_s", d.total_s),
                   keepalive_s=s.number("keepalive_s", d.keepalive_s, exclusive_lo=False))
    s.done()
    return out


def _limits(s: Section) -> Limits:
    d = Limits()
    out = Limits(max_body_bytes=s.integer("max_body_bytes", d.max_body_bytes, lo=1024),
                 max_upstream_body_bytes=s.integer("max_upstream_body_bytes",
                                                   d.max_upstream_body_bytes, lo=1024),
                 max_upload_bytes=s.integer("max_upload_bytes", d.max_upload_bytes, lo=1024))
    s.done()
    return out


def _agents(s: Section, auth_enabled: bool) -> Agents:
    d = Agents()
    networks = s.get("allowed_networks")
    out = Agents(enabled=s.flag("enabled", auth_enabled),
                 ttl_s=s.number("ttl_s", d.ttl_s),
                 remove_after_s=s.number("remove_after_s", d.remove_after_s),
                 state_file=s.text("state_file"),
                 allowed_networks=d.allowed_networks if networks is None
                 else parse_networks(networks, s.key("allowed_networks")),
                 max_ids_per_token=s.integer("max_ids_per_token", d.max_ids_per_token, lo=1),
                 max_workers=s.integer("max_workers", d.max_workers, lo=0),
                 alias_targets=s.flag("alias_targets", d.alias_targets))
    s.done()
    if out.remove_after_s < out.ttl_s:
        raise ConfigError(f"{s.path}.remove_after_s: must be >= ttl_s ({out.ttl_s})")
    return out


def parse_config(raw: object) -> Config:
    root = Section(raw, "")
    workers: list[WorkerSpec] = []
    names: set[str] = set()
    for i, w in enumerate(root.items("workers")):
        spec = parse_worker(w, f"workers[{i}]")
        if spec.name in names:
            raise ConfigError(f"workers[{i}].name: duplicate worker name {spec.name!r}")
        names.add(spec.name)
        workers.append(spec)
    aliases_s = root.section("aliases")
    aliases: dict[str, str] = {}
    for key in list(aliases_s.data):
        aliases[str(key)] = aliases_s.text(key, required=True)
    auth = parse_auth(root.get("auth"), "auth")
    cfg = Config(
        listen=_listen(root.section("listen")),
        auth=auth,
        admission=parse_admission(root.get("admission"), "admission"),
        routing=_routing(root.section("routing")),
        health=_health(root.section("health")),
        timeouts=_timeouts(root.section("timeouts")),
        limits=_limits(root.section("limits")),
        aliases=aliases,
        agents=_agents(root.section("agents"), auth.enabled),
        resilience=_resilience(root.section("resilience")),
        metrics=parse_metrics(root.get("metrics")),
        tracing=parse_tracing(root.get("tracing")),
        state=parse_state(root.get("state")),
        spill=parse_spill(root.get("spill")),
        response_cache=parse_response_cache(root.get("response_cache")),
        prices=parse_prices(root.get("prices")),
        ledger=parse_ledger(root.get("ledger")),
        budgets=parse_budgets(root.get("budgets")),
        workers=tuple(workers),
        log_level=root.text("log_level", "info",
                            choices=("debug", "info", "warning", "error")),
        shutdown_grace_s=root.number("shutdown_grace_s", 30.0),
    )
    root.done()
    return cfg


def load_config(path: str | Path) -> Config:
    return parse_config(read_yaml(Path(path)))
