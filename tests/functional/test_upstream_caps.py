"""A worker's answer over ``limits.max_upstream_body_bytes``: a clear 502, not a failover.

Real hub, two fault workers whose answers are padded past the cap. The answer is
refused whole (never cut short and passed on), the error names the limit, only one
worker is asked, and no breaker is charged: the worker did its job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import chat, fault_stats, hub_workers, post_json, session, until

pytestmark = pytest.mark.timeout(120)

CAP = 4096


async def test_answer_over_the_cap_is_a_502_naming_it_and_not_failed_over(
        tmp_path: Path) -> None:
    workers = [FaultWorker(tmp_path).start() for _ in range(2)]
    for w in workers:
        w.control(pad=CAP * 2)
    hub = HubProcess({
        "health": {"interval_s": 0.3, "timeout_s": 1},
        "limits": {"max_upstream_body_bytes": CAP},
        "routing": {"max_attempts": 3},
        "workers": [{"name": f"w{i}", "url": w.url} for i, w in enumerate(workers)],
    }, tmp_path)
    try:
        hub.start()
        async with session() as http:
            async def healthy() -> bool:
                return all(w["healthy"] for w in (await hub_workers(http, hub.url)).values())
            await until(healthy, timeout=30, what="both workers healthy")
            status, _, doc = await post_json(http, f"{hub.base_url}/chat/completions",
                                             chat("fault-model"))
            assert status == 502
            assert doc["error"]["code"] == "upstream_answer_too_large"
            assert "max_upstream_body_bytes" in doc["error"]["message"]
            assert str(CAP) in doc["error"]["message"]
            asked = [(await fault_stats(http, w.url))["requests"] for w in workers]
            assert sorted(asked) == [0, 1]  # one worker asked, no failover
            states = {w["name"]: w["breaker"]["state"]
                      for w in (await hub_workers(http, hub.url)).values()}
            assert set(states.values()) == {"closed"}
            # A small answer from the same workers still passes.
            for w in workers:
                w.control(pad=0)
            status, _, doc = await post_json(http, f"{hub.base_url}/chat/completions",
                                             chat("fault-model"))
            assert status == 200, doc
    finally:
        hub.stop()
        for w in workers:
            w.stop()
