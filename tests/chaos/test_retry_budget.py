"""Every worker failing: failover must not multiply the load on them."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from tests.chaos.conftest import Figure
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import (
    Tally,
    chat,
    fault_stats,
    get_json,
    metric_samples,
    non_stream,
    run_fixed,
)

pytestmark = pytest.mark.timeout(60)

REQUESTS = 300
RATIO = 0.2
MIN_PER_S = 1.0
WINDOW_S = 30.0  # longer than the test: nothing expires from the budget while it runs
MAX_ATTEMPTS = 3


async def test_retry_budget_bounds_failover_when_all_workers_fail(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """Three workers answering 500: the upstream requests they receive stay within
    requests * (1 + ratio) + min_per_s * window_s, where the failover rules alone would
    allow twice the requests (a request stops at its second 5xx)."""
    workers = [make_fault(mode="error500") for _ in range(3)]
    hub = make_hub(workers_config(
        *workers,
        routing={"max_attempts": MAX_ATTEMPTS},
        # Breakers off, so only the budget limits the retries.
        resilience={"breaker": {"consecutive_failures": 0, "min_requests": 1_000_000},
                    "retry_budget": {"ratio": RATIO, "min_per_s": MIN_PER_S,
                                     "window_s": WINDOW_S}}))
    tally = Tally()
    await run_fixed(REQUESTS, 8, lambda _: non_stream(http, hub.url, tally,
                                                      chat("fault-model")))
    upstream = sum([(await fault_stats(http, w.url))["requests"] for w in workers])
    floor = MIN_PER_S * WINDOW_S

    assert tally.sent == REQUESTS
    assert tally.statuses == {502: REQUESTS}  # an OpenAI-style upstream error for each
    assert upstream <= REQUESTS * (1 + RATIO) + floor
    # Without the budget it would be REQUESTS * 2 (a request that two workers answer
    # with 5xx stops there); the budget was spent, not left unused (every request wanted
    # one more attempt).
    assert upstream >= REQUESTS * (1 + RATIO)
    budget = (await get_json(http, f"{hub.url}/admin/workers"))["retry_budget"]
    assert budget["retries"] == upstream - REQUESTS
    assert budget["balance"] < 1
    attempts = sum((await metric_samples(http, hub.url,
                                         "spokehub_upstream_attempts_total")).values())
    assert attempts == upstream  # the hub's count agrees with the workers'
    figure("requests", tally.sent)
    figure("failed", tally.failed)
    figure("upstream_requests", upstream)
    figure("upstream_bound", REQUESTS * (1 + RATIO) + floor)
    figure("upstream_without_budget", REQUESTS * 2)
