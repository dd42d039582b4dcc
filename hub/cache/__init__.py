"""The response cache: answers to deterministic requests, kept in memory per tenant.

``config`` (the ``response_cache:`` section), ``policy`` (which requests are
deterministic, Cache-Control), ``key`` (HMAC over tenant, route, model, canonical body),
``store`` (LRU bounded in bytes, TTL), ``replay`` (a hit, whole or as SSE), ``cache``
(the request path's calls), ``metrics``. See README "Response cache".
"""
