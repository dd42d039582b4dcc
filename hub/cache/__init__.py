"""The response cache: answers to deterministic requests, kept in memory per tenant.

``config`` (the ``response_cache:`` section), ``policy`` (which requests are
deterministic, Cache-Control), ``key`` (HMAC over tenant, route, model, canonical body),
``store`` (LRU bounded in bytes, TTL), ``replay`` (a hit, whole or as SSE),
``assemble`` (a relayed stream back into a whole answer), ``cache`` (the request
path's calls: plan, fill), ``metrics``. See README "Response cache".

It reads the per-request record (``hub.forward.call``) and the stream tap
(``hub.observe.usage``); it must not import routing, admission or the proxy: a hit
never reaches them.
"""
