"""The ``response_cache:`` section: answers to deterministic requests kept in memory.

::

    response_cache:
      enabled: false
      max_bytes: 67108864          # the whole cache (keys, bodies, per-entry overhead)
      max_entry_bytes: 1048576     # a larger answer is not stored
      ttl_s: 300                   # an entry is served for this long after it was stored
      pepper_env: SPOKEHUB_CACHE_PEPPER  # the variable holding the HMAC key (>= 16 chars)
      routes: [/chat/completions, /completions, /embeddings]
      default_temperature: null    # what an absent temperature means; null: unknown, so
                                   # a request without one is not cached

The pepper is read from the environment when the hub starts or reloads: a missing or
short one with the cache enabled is a config error naming the variable, so hubs that
will share a cache later key it alike, and a key never leaves the process usable
without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hub.config.kit import ConfigError, Section

CACHE_ROUTES = ("/chat/completions", "/completions", "/embeddings")
MIN_PEPPER_CHARS = 16


@dataclass(frozen=True, slots=True)
class ResponseCacheConfig:
    enabled: bool = False
    max_bytes: int = 64 << 20
    max_entry_bytes: int = 1 << 20
    ttl_s: float = 300.0
    pepper_env: str = "SPOKEHUB_CACHE_PEPPER"
    routes: tuple[str, ...] = CACHE_ROUTES
    default_temperature: float | None = None

    def pepper(self) -> bytes:
        """The HMAC key from the environment; raises ConfigError naming the variable."""
        value = os.environ.get(self.pepper_env, "")
        if len(value) < MIN_PEPPER_CHARS:
            what = "is not set" if not value else f"is shorter than {MIN_PEPPER_CHARS} " \
                                                  f"characters"
            raise ConfigError(f"response_cache.pepper_env: the environment variable "
                              f"{self.pepper_env} {what} (response_cache.enabled: true "
                              f"needs a secret pepper for the cache keys)")
        return value.encode("utf-8", "surrogatepass")


def parse_response_cache(raw: object, path: str = "response_cache") -> ResponseCacheConfig:
    s = Section(raw, path)
    d = ResponseCacheConfig()
    routes = s.items("routes") if s.data.get("routes") is not None else list(d.routes)
    for i, route in enumerate(routes):
        if route not in CACHE_ROUTES:
            raise ConfigError(f"{s.key('routes')}[{i}]: must be one of "
                              f"{', '.join(CACHE_ROUTES)}, got {route!r}")
    default_temperature = s.get("default_temperature")
    if default_temperature is not None:
        default_temperature = s.number("default_temperature", 0.0, exclusive_lo=False)
    out = ResponseCacheConfig(
        enabled=s.flag("enabled", d.enabled),
        max_bytes=s.integer("max_bytes", d.max_bytes, lo=1024),
        max_entry_bytes=s.integer("max_entry_bytes", d.max_entry_bytes, lo=1),
        ttl_s=s.number("ttl_s", d.ttl_s),
        pepper_env=s.text("pepper_env", d.pepper_env),
        routes=tuple(dict.fromkeys(routes)),
        default_temperature=default_temperature)
    s.done()
    if out.max_entry_bytes > out.max_bytes:
        raise ConfigError(f"{path}.max_entry_bytes: must be <= max_bytes ({out.max_bytes})")
    return out
