"""Forwarding one request: pick a worker, send, fail over before the first byte,
enforce upstream timeouts, and relay the answer (bytes or SSE events) to the client.

``proxy.py`` the failover loop and its rules; ``attempt.py`` one attempt at one worker;
``deadline.py`` the upstream timeouts; ``sse.py`` event framing and each API's final
event; ``relay.py`` copying a stream to the client; ``wire.py`` each route's stream as
its client sees it (SSE or NDJSON, and the error event that ends a broken one). It
reads the fleet and routing, reports outcomes to ``hub.resilience.report``, and talks
to workers only through ``hub.upstream`` and ``hub.backends``; it must not import
``hub.api``."""
