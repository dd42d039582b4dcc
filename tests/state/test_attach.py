"""attach_shared_limits on an in-process hub with a link to a real redis-server: what it
wires, that a config reload keeps the shared buckets, and the metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from hub.config.schema import parse_config
from hub.runtime.hub import Hub
from hub.state.attach import attach_shared_limits
from hub.state.buckets import SharedBuckets
from tests.state.limits_support import redis_server, two_links
from tests.state.link_impl import LinkForTests

__all__ = ["redis_server", "two_links"]  # fixtures


def raw(rate: float) -> dict[str, Any]:
    return {"workers": [{"name": "w0", "url": "http://127.0.0.1:9", "max_concurrency": 2}],
            "admission": {"requests_per_s": rate, "burst": 1, "queue_timeout_s": 0}}


async def test_attach_wires_and_survives_a_reload(
        two_links: tuple[LinkForTests, LinkForTests]) -> None:
    link, _ = two_links
    hub = Hub(parse_config(raw(1.0)))
    limits = attach_shared_limits(hub, link)
    await link.start()
    try:
        assert isinstance(hub.admission.remote, SharedBuckets)
        assert hub.admission.remote is limits.buckets
        await hub.admission.admit("acme")
        assert await link.client.exists(link.key("rl", "{acme}", "req"))
        changes = hub.apply(parse_config(raw(2.0)))
        assert "admission: updated" in changes
        assert hub.admission.cfg.default.requests_per_s == 2.0
        assert hub.admission.remote is limits.buckets  # a reload keeps the shared buckets
        text = generate_latest(hub.metrics.prom).decode()
        assert 'spokehub_shared_rate_limit_fallbacks_total{on_outage="closed"} 0.0' in text
        assert "spokehub_shared_prefix_entries_adopted_total 0.0" in text
        assert 'spokehub_worker_remote_in_flight{worker="w0"} 0.0' in text
    finally:
        await limits.aclose()
    assert hub.admission.remote is None
    assert "spokehub_shared" not in generate_latest(hub.metrics.prom).decode()
