"""The ``state:`` section: where hub processes share their state.

::

    state:
      backend: memory               # memory (one hub process) | redis (several hubs)
      url_env: SPOKEHUB_REDIS_URL   # the environment variable holding the Redis URL
                                    # (redis://, rediss:// or unix://; never in the file)
      namespace: spokehub           # key prefix: hubs of one fleet share it
      rate_limits_on_outage: open   # open: each hub limits alone while Redis is down;
                                    # closed: requests of rate-limited tenants get 503
      share_response_cache: true    # a local response-cache miss looks in Redis; fills
                                    # are written there too (same pepper on every hub)
      cache_lookup_timeout_s: 0.1   # a Redis lookup slower than this is a miss
      share_budgets: true           # budgets judge the fleet's usage, not this hub's
      budget_sync_s: 0.5            # send this hub's usage and read the fleet's this often
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from hub.config.kit import ConfigError, Section

STATE_BACKENDS = ("memory", "redis")
# Set by ``spokehub serve --processes N`` for its children: they share state through
# the supervisor's private Redis whatever the file says (and keep doing so on reload).
BACKEND_OVERRIDE_ENV = "SPOKEHUB_STATE_BACKEND"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class StateConfig:
    backend: str = "memory"
    url_env: str = "SPOKEHUB_REDIS_URL"
    namespace: str = "spokehub"
    rate_limits_on_outage: str = "open"
    share_response_cache: bool = True
    cache_lookup_timeout_s: float = 0.1
    share_budgets: bool = True
    budget_sync_s: float = 0.5

    @property
    def shared(self) -> bool:
        return self.backend == "redis"

    def url(self) -> str:
        """The Redis URL from the environment; raises ConfigError naming the variable."""
        value = os.environ.get(self.url_env, "").strip()
        if not value:
            raise ConfigError(f"state.url_env: the environment variable {self.url_env} "
                              f"is not set (state.backend: redis needs a Redis URL)")
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"state.url_env: {self.url_env} must hold a redis://, "
                              f"rediss:// or unix:// URL")
        return value


def parse_state(raw: object, path: str = "state") -> StateConfig:
    s = Section(raw, path)
    d = StateConfig()
    out = StateConfig(
        backend=s.text("backend", d.backend, choices=STATE_BACKENDS),
        url_env=s.text("url_env", d.url_env),
        namespace=s.text("namespace", d.namespace),
        rate_limits_on_outage=s.text("rate_limits_on_outage", d.rate_limits_on_outage,
                                     choices=("open", "closed")),
        share_response_cache=s.flag("share_response_cache", d.share_response_cache),
        cache_lookup_timeout_s=s.number("cache_lookup_timeout_s", d.cache_lookup_timeout_s),
        share_budgets=s.flag("share_budgets", d.share_budgets),
        budget_sync_s=s.number("budget_sync_s", d.budget_sync_s))
    s.done()
    if out.cache_lookup_timeout_s > 5:
        raise ConfigError(f"{path}.cache_lookup_timeout_s: must be at most 5 (it is "
                          f"added to every cacheable request's miss), got "
                          f"{out.cache_lookup_timeout_s}")
    if not 0.05 <= out.budget_sync_s <= 60:
        raise ConfigError(f"{path}.budget_sync_s: must be between 0.05 and 60, got "
                          f"{out.budget_sync_s}")
    override = os.environ.get(BACKEND_OVERRIDE_ENV, "").strip()
    if override:
        if override not in STATE_BACKENDS:
            raise ConfigError(f"{BACKEND_OVERRIDE_ENV}: must be one of "
                              f"{', '.join(STATE_BACKENDS)}, got {override!r}")
        out = replace(out, backend=override)
    if not _NAMESPACE_RE.match(out.namespace):
        raise ConfigError(f"{path}.namespace: 1-64 letters, digits or _.:- "
                          f"(got {out.namespace!r})")
    return out
