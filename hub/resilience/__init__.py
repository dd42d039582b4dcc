"""Keeping the fleet safe from failing workers: per-worker circuit breakers, outlier
ejection of slow workers, the retry budget that bounds failover traffic, and the one
place an attempt's outcome is reported to (``report.py``). Sync state with injected
clocks; no I/O and no imports of the request path."""
