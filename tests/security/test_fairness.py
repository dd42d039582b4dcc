"""Fairness between tenants: one floods the hub, the other keeps being served.

Functional, not timing: every request of the well-behaved tenant succeeds while the
flooder gets 429s (with Retry-After) and never more than its rate allows. Latency
with and without a flood is measured by bench/fairness.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.security.support import AUDIENCE, ISSUER, chat, claims, hmac_secret, sign, wait_until
from tests.support.hubproc import FaultWorker, HubProcess

ENV = "SPOKEHUB_SEC_FAIR_SECRET"
MODEL = "fault-model"
FLOOD_RATE, FLOOD_BURST, FLOOD_QUEUE = 5, 5, 2
SECONDS = 3.0


@dataclass
class Fair:
    hub: HubProcess
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def fair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fair]:
    tmp = tmp_path_factory.mktemp("fair")
    worker = FaultWorker(tmp, MODEL, "ok", delay_s=0.05).start()
    secret = hmac_secret()
    config = {
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "auth": {"enabled": True, "audience": AUDIENCE, "issuer": ISSUER,
                 "keys": [{"kid": "fair", "alg": "HS256", "secret_env": ENV}]},
        "admission": {
            "worker_queue_max": 100, "worker_queue_timeout_s": 10,
            "tenants": {
                "flooder": {"requests_per_s": FLOOD_RATE, "burst": FLOOD_BURST,
                            "max_queue": FLOOD_QUEUE, "queue_timeout_s": 1},
                "victim": {"requests_per_s": 5, "burst": 5, "max_queue": 4,
                           "queue_timeout_s": 5}}},
        "workers": [{"name": "fault", "url": worker.url, "max_concurrency": 2}],
    }
    hub = HubProcess(config, tmp, {ENV: secret})
    try:
        hub.start()
        tokens = {t: sign(claims(t), secret, "HS256", "fair") for t in ("flooder", "victim")}
        wait_until(lambda: chat(hub.port, tokens["victim"], MODEL).status == 200)
        yield Fair(hub, tokens)
    finally:
        hub.stop()
        worker.stop()


async def test_flooder_is_throttled_and_victim_is_served(fair: Fair) -> None:
    url = f"{fair.hub.url}/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    flood: Counter[int] = Counter()
    retry_after: Counter[str] = Counter()
    victim: list[int] = []
    loop = asyncio.get_running_loop()
    await asyncio.sleep(1.2)  # let both buckets refill after the fixture's warm-up call
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = loop.time()
        stop = start + SECONDS

        async def flooder() -> None:
            headers = {"Authorization": f"Bearer {fair.tokens['flooder']}"}
            while loop.time() < stop:
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    flood[resp.status] += 1
                    if resp.status == 429:
                        retry_after[resp.headers.get("Retry-After", "")] += 1

        async def well_behaved() -> None:
            headers = {"Authorization": f"Bearer {fair.tokens['victim']}"}
            for _ in range(10):  # 3.3 requests/s, under its own 5/s
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    victim.append(resp.status)
                await asyncio.sleep(0.3)

        await asyncio.gather(*(flooder() for _ in range(24)), well_behaved())
        elapsed = loop.time() - start

    print(f"\nfairness: flooder {dict(flood)} in {elapsed:.1f}s; victim {victim}")
    assert victim == [200] * 10, victim
    assert set(flood) <= {200, 429}, flood
    assert flood[429] >= 20, flood
    # the flooder never gets more than its bucket allows (plus the few it queued)
    assert FLOOD_BURST <= flood[200] <= FLOOD_BURST + FLOOD_RATE * elapsed + FLOOD_QUEUE, (
        flood, elapsed)
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after), retry_after
