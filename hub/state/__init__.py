"""State shared between hub processes (``state.backend: redis``): agent workers, drain
flags, breaker transitions, rate-limit buckets, in-flight counts and the prompt-prefix
map. Routing never waits on it: each hub keeps a local snapshot fresh by pub/sub.

``redis_link.py`` owns the one connection (outage tracking, pub/sub, resync); the
other modules each share one kind of state through it and apply what they receive to
the hub's own objects (registry, agent book, breakers). It may import the fleet and
resilience packages, never the request path (api, forward, server)."""
