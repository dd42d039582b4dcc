"""Forwarding one request: pick a worker, send, fail over before the first byte,
enforce upstream timeouts, and relay the answer (bytes or SSE events) to the client.
It reads the fleet and routing, reports outcomes to resilience, and talks to workers
only through ``hub.upstream`` and ``hub.backends``; it must not import ``hub.api``."""
