"""Keeping the fleet safe from failing workers: per-worker circuit breakers, outlier
ejection of slow workers, and the retry budget that bounds failover traffic. Pure,
sync state machines with injected clocks; no I/O and no imports of the request path."""
