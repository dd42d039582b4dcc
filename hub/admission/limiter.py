"""Per-tenant admission: rate limits with a short bounded queue.

Config schema (every key optional; an absent ``admission:`` admits everything)::

    admission:
      requests_per_s: 5         # sustained request rate per tenant (null = unlimited)
      burst: 10                 # bucket size; default max(1, requests_per_s)
      max_queue: 32             # requests of one tenant allowed to wait for tokens
      queue_timeout_s: 10       # longest wait; a longer one is rejected at once (0 = no waiting)
      tokens_per_min: 20000     # completion-token budget, charged from max_tokens
                                # (burst = one minute's worth; null = unlimited)
      max_messages: 256         # request caps, see hub.admission.caps
      max_prompt_chars: 200000
      max_tokens_cap: 4096      # clamps max_tokens, and sets it when absent
      worker_queue_max: 1000    # requests waiting in the hub for a worker with room
      worker_queue_timeout_s: 60  #   (workers[i].max_concurrency caps each worker)
      worker_queue_sheddable_max: 500  # sheddable requests are refused from this
                                #   queue length on (default: half of worker_queue_max)
      batch_aging_s: 10         # a batch request waiting this long ranks as interactive
      priority: interactive     # class of a tenant's requests (interactive | batch |
                                #   sheddable), see hub.admission.priority
      weight: 1                 # a tenant's share of the fleet against others of its
                                #   class in the worker queue (fair by tokens)
      tenants:                  # per-tenant overrides of the keys above (a tenant
                                # that sets requests_per_s but not burst gets
                                # burst max(1, its rate))
        acme: {requests_per_s: 50, burst: 100, max_tokens_cap: 8192}
        batch: {requests_per_s: null}   # explicit null lifts a limit for this tenant

Rejections are 429 ``rate_limit_exceeded`` with ``Retry-After`` (whole seconds,
at least 1). Waiting is FIFO per tenant: a request books its tokens on arrival
(the bucket goes into debt) and sleeps until its turn, so each tenant has its
own buckets and queue and a flooding tenant cannot spend another's budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from hub.admission.caps import Caps
from hub.admission.priority import CLASSES, INTERACTIVE
from hub.admission.token_bucket import TokenBucket
from hub.config.kit import ConfigError, Section
from hub.errors import AdmissionRejected


@dataclass(frozen=True, slots=True)
class TenantLimits:
    requests_per_s: float | None = None
    burst: float | None = None  # resolved by parse_admission; None -> max(1, rate)
    max_queue: int = 32
    queue_timeout_s: float = 10.0
    tokens_per_min: float | None = None
    caps: Caps = field(default_factory=Caps)
    priority: str = INTERACTIVE  # class of the tenant's requests in the worker queue
    weight: float = 1.0  # its share against other tenants of that class

    @property
    def request_burst(self) -> float:
        if self.burst is not None:
            return self.burst
        return max(1.0, self.requests_per_s or 1.0)

    @property
    def unlimited(self) -> bool:
        return self.requests_per_s is None and self.tokens_per_min is None


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    default: TenantLimits = field(default_factory=TenantLimits)
    tenants: Mapping[str, TenantLimits] = field(default_factory=dict)
    worker_queue_max: int = 1000
    worker_queue_timeout_s: float = 60.0
    worker_queue_sheddable_max: int = 500
    batch_aging_s: float = 10.0

    def for_tenant(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, self.default)


MAX_COST_TOKENS = 2 ** 53  # exact as a float; far beyond any real budget


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class Refundable(Protocol):
    """A completion-token budget that can take tokens back: a local bucket, or a shared
    one (``hub.state.buckets``)."""

    def refund(self, n: float) -> None: ...


class RemoteBuckets(Protocol):
    """Buckets shared by several hubs (``hub.state.buckets``). ``admit`` returns None
    when the shared store cannot be used and the local buckets should limit instead."""

    async def admit(self, tenant: str, limits: TenantLimits,
                    cost_tokens: int) -> Ticket | None: ...


class Ticket:
    """Proof of admission. ``settle(used)`` refunds the unused part of the
    token budget charged on admission (call it once the usage is known)."""

    __slots__ = ("_bucket", "cost_tokens", "tenant", "waited_s")

    def __init__(self, tenant: str, waited_s: float = 0.0, cost_tokens: int = 0,
                 bucket: Refundable | None = None) -> None:
        self.tenant = tenant
        self.waited_s = waited_s
        self.cost_tokens = cost_tokens
        self._bucket = bucket

    def settle(self, used_tokens: int) -> None:
        bucket, self._bucket = self._bucket, None
        if bucket is not None and used_tokens < self.cost_tokens:
            bucket.refund(self.cost_tokens - max(0, used_tokens))


class _Tenant:
    __slots__ = ("limits", "queued", "requests", "tokens")

    def __init__(self, limits: TenantLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.queued = 0
        self.requests = (TokenBucket(limits.requests_per_s, limits.request_burst, clock)
                         if limits.requests_per_s is not None else None)
        self.tokens = (TokenBucket(limits.tokens_per_min / 60.0, limits.tokens_per_min, clock)
                       if limits.tokens_per_min is not None else None)

    @property
    def idle(self) -> bool:
        """True when dropping this state loses nothing: no waiters, buckets full."""
        return (self.queued == 0 and (self.requests is None or self.requests.full)
                and (self.tokens is None or self.tokens.full))


class Admission:
    """Per-tenant rate limiting. One instance per config; a reload builds a new one."""

    def __init__(self, cfg: AdmissionConfig, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 sweep_interval_s: float = 60.0, remote: RemoteBuckets | None = None) -> None:
        self.cfg = cfg
        self.remote = remote  # several hubs: limits hold across them (state.backend: redis)
        self._clock = clock
        self._sleep = sleep
        self._sweep_interval = sweep_interval_s
        self._last_sweep = clock()
        self._tenants: dict[str, _Tenant] = {}

    def limits_for(self, tenant: str) -> TenantLimits:
        return self.cfg.for_tenant(tenant)

    def queued(self, tenant: str) -> int:
        st = self._tenants.get(tenant)
        return st.queued if st else 0

    @property
    def tracked_tenants(self) -> int:
        return len(self._tenants)

    def sweep(self) -> int:
        """Forget tenants whose buckets have refilled; returns how many."""
        self._last_sweep = self._clock()
        idle = [name for name, st in self._tenants.items() if st.idle]
        for name in idle:
            del self._tenants[name]
        return len(idle)

    async def admit(self, tenant: str, cost_tokens: int = 0) -> Ticket:
        """Admit now, or wait (bounded) for the tenant's turn, or raise 429."""
        if self._clock() - self._last_sweep >= self._sweep_interval:
            self.sweep()
        limits = self.cfg.for_tenant(tenant)
        if limits.unlimited:
            return Ticket(tenant)
        if self.remote is not None:
            ticket = await self.remote.admit(tenant, limits, cost_tokens)
            if ticket is not None:
                return ticket
        st = self._tenants.get(tenant)
        if st is None:
            st = self._tenants[tenant] = _Tenant(limits, self._clock)
        # clamp: max_tokens * n can pass float range (n=10**400 is valid JSON)
        cost = min(max(0, cost_tokens), MAX_COST_TOKENS) if st.tokens is not None else 0
        wait = st.requests.wait_time(1.0) if st.requests else 0.0
        if cost and st.tokens:
            wait = max(wait, st.tokens.wait_time(cost))
        if wait > 0.0:
            if st.queued >= limits.max_queue:
                raise AdmissionRejected(
                    f"Rate limit exceeded for tenant {tenant!r}: {st.queued} requests "
                    f"already waiting; retry in {math.ceil(wait)} s",
                    headers=_retry_after(wait))
            if wait > limits.queue_timeout_s:
                raise AdmissionRejected(
                    f"Rate limit exceeded for tenant {tenant!r}; retry in "
                    f"{math.ceil(wait)} s", headers=_retry_after(wait))
        if st.requests:
            st.requests.reserve(1.0)
        if cost and st.tokens:
            st.tokens.reserve(cost)
        if wait > 0.0:
            st.queued += 1
            try:
                await self._sleep(wait)
            except BaseException:  # cancelled while queued: give the booking back
                if st.requests:
                    st.requests.refund(1.0)
                if cost and st.tokens:
                    st.tokens.refund(cost)
                raise
            finally:
                st.queued -= 1
        return Ticket(tenant, wait, cost, st.tokens if cost else None)


_NULLABLE = ("requests_per_s", "burst", "tokens_per_min", "max_messages",
             "max_prompt_chars", "max_tokens_cap")
_TENANT_KEYS = (*_NULLABLE, "max_queue", "queue_timeout_s", "priority", "weight")


def _layer(s: Section) -> dict[str, Any]:
    """The limits a section sets explicitly (None = explicitly unlimited)."""

    out: dict[str, Any] = {}
    for key in _TENANT_KEYS:
        if key not in s.data:
            continue
        if s.data[key] is None:
            if key not in _NULLABLE:
                raise ConfigError(f"{s.path}.{key}: must not be null")
            s.get(key)
            out[key] = None
            continue
        if key in ("requests_per_s", "tokens_per_min"):
            out[key] = s.number(key, 0.0)
        elif key == "burst":
            value = s.number(key, 1.0)
            if value < 1:
                raise ConfigError(f"{s.path}.burst: must be >= 1, got {value}")
            out[key] = value
        elif key == "queue_timeout_s":
            out[key] = s.number(key, 0.0, lo=0.0, exclusive_lo=False)
        elif key == "priority":
            out[key] = s.text(key, choices=CLASSES)
        elif key == "weight":
            out[key] = s.number(key, 1.0)
        elif key == "max_queue":
            out[key] = s.integer(key, 0, lo=0, hi=1_000_000)
        else:
            out[key] = s.integer(key, 0, lo=1)
    return out


def _limits(layer: dict[str, Any]) -> TenantLimits:
    d = TenantLimits()
    rate = layer.get("requests_per_s")
    return TenantLimits(
        requests_per_s=rate,
        burst=(layer.get("burst") or max(1.0, rate)) if rate is not None else None,
        max_queue=layer.get("max_queue", d.max_queue),
        queue_timeout_s=layer.get("queue_timeout_s", d.queue_timeout_s),
        tokens_per_min=layer.get("tokens_per_min"),
        caps=Caps(max_messages=layer.get("max_messages"),
                  max_prompt_chars=layer.get("max_prompt_chars"),
                  max_tokens_cap=layer.get("max_tokens_cap")),
        priority=layer.get("priority", d.priority),
        weight=layer.get("weight", d.weight))


def parse_admission(raw: object, path: str = "admission") -> AdmissionConfig:
    """Check the ``admission:`` mapping; raises hub.config.kit.ConfigError naming the key."""

    s = Section(raw, path)
    base = _layer(s)
    if base.get("burst") is not None and base.get("requests_per_s") is None:
        raise ConfigError(f"{path}.burst: needs {path}.requests_per_s")
    tenants: dict[str, TenantLimits] = {}
    ts = s.section("tenants")
    for name, body in ts.data.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}.tenants: tenant names must be non-empty strings, "
                              f"got {name!r}")
        tsec = Section(body, f"{path}.tenants.{name}")
        layer = _layer(tsec)
        tsec.done()
        merged = {**base, **layer}
        if "requests_per_s" in layer and "burst" not in layer:
            merged.pop("burst", None)  # a new rate brings its own default burst
        tenants[name] = _limits(merged)
    queue_max = s.integer("worker_queue_max", 1000, lo=0, hi=1_000_000)
    cfg = AdmissionConfig(
        default=_limits(base),
        tenants=MappingProxyType(tenants),
        worker_queue_max=queue_max,
        worker_queue_timeout_s=s.number("worker_queue_timeout_s", 60.0),
        worker_queue_sheddable_max=s.integer("worker_queue_sheddable_max", queue_max // 2,
                                             lo=0, hi=1_000_000),
        batch_aging_s=s.number("batch_aging_s", 10.0))
    s.done()
    return cfg
