"""State shared between hub processes (``state.backend: redis``): agent workers, drain
flags, breaker transitions, rate-limit buckets, in-flight counts and the prompt-prefix
map. Routing never waits on it: each hub keeps a local snapshot fresh by pub/sub."""
