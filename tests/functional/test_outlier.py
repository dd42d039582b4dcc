"""Slow-worker ejection with real worker processes: a worker far slower than its peer
for the same model is taken out of rotation, while its peer keeps serving."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from tests.support.hubproc import FaultWorker, HubProcess


def _chat(hub: HubProcess) -> str:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(f"{hub.url}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return str(resp.headers["X-Spokehub-Worker"])


def test_slow_worker_is_ejected_and_peer_serves(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess]) -> None:
    fast = make_fault("m", "ok", delay_s=0.01)
    slow = make_fault("m", "ok", delay_s=0.4)
    hub = make_hub({
        "health": {"interval_s": 0.3, "timeout_s": 1},
        "resilience": {"outlier": {"factor": 3, "min_samples": 3, "min_latency_s": 0.2,
                                   "eject_s": 60}},
        "workers": [{"name": "fast", "url": fast.url}, {"name": "slow", "url": slow.url}],
    })
    served = [_chat(hub) for _ in range(10)]
    assert {"fast", "slow"} <= set(served)  # round robin used both while they were even
    deadline = time.monotonic() + 5
    while hub.workers()["slow"]["ejected_for_models"] != ["m"]:
        assert time.monotonic() < deadline, hub.workers()["slow"]
        time.sleep(0.05)
    before = slow.stats()["requests"]
    assert {_chat(hub) for _ in range(10)} == {"fast"}
    assert slow.stats()["requests"] == before
    assert hub.workers()["fast"]["ejected_for_models"] == []  # the last one is never ejected
