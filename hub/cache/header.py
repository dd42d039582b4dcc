"""``X-Spokehub-Cache``: what the response cache did for an answer.

``hit``: served from the cache, no worker involved; ``miss``: looked up, not found,
answered by a worker (and stored if it was a whole 200 answer); ``bypass``: on a cached
route but not looked up (not deterministic, or ``Cache-Control: no-cache``/``no-store``).
Routes the cache does not cover, and hubs with the cache off, send no such header.
"""

from __future__ import annotations

from hub.forward.call import Call

CACHE_HEADER = "X-Spokehub-Cache"
HIT, MISS, BYPASS = "hit", "miss", "bypass"


def cache_header(call: Call) -> dict[str, str]:
    """The header for a worker's answer to ``call``, if the cache had a say."""
    status = call.cache
    return {} if status is None else {CACHE_HEADER: status}
