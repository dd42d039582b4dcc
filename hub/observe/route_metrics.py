"""Routing decisions: why each answered request went where it went.

``spokehub_route_decisions_total{policy, reason}`` counts the decision behind each
request's last attempt (the one the ``X-Spokehub-Route`` header reports), and
``spokehub_route_prefix_matched`` is the share of the prompt the chosen worker had
(requests with a prompt key only). Only a request-aware policy (``cache_aware``) makes
decisions with a reason; the cached-prompt ratio itself comes from the workers' token
counts, not from here.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from hub.forward.call import Call
from hub.routing.request import REASONS

MATCHED_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
POLICY = "cache_aware"  # the one policy that gives reasons


class RouteMetrics:
    def __init__(self, prom: CollectorRegistry) -> None:
        self.decisions = Counter("spokehub_route_decisions_total",
                                 "Routing decisions by policy and reason",
                                 ["policy", "reason"], registry=prom)
        self.matched = Histogram("spokehub_route_prefix_matched",
                                 "Share of the prompt the chosen worker had cached",
                                 ["policy"], buckets=MATCHED_BUCKETS, registry=prom)
        # Children made up front: .labels() costs microseconds, and every reason shows.
        self._decisions: dict[str, Any] = {r: self.decisions.labels(POLICY, r)
                                           for r in REASONS}
        self._matched = self.matched.labels(POLICY)

    def observe(self, call: Call) -> None:
        choice = call.choice
        if choice is None:
            return
        self._decisions[choice.reason].inc()
        if call.route_req is not None and call.route_req.blocks:
            self._matched.observe(choice.matched)
