"""Timeouts and 5xx that must not multiply GPU work: real hub, fault-injecting workers.

A request a worker has accepted (sent headers for) is not started over elsewhere when
it is merely slow; a request several workers answer with 5xx stops after two of them
and is charged to one breaker at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.load import (
    chat,
    fault_stats,
    hub_workers,
    post_json,
    read_stream,
    session,
    until,
)

pytestmark = pytest.mark.timeout(120)

FIRST_BYTE_S = 0.5
TOTAL_S = 3.0


@pytest.fixture
def killed_after() -> Iterator[list[FaultWorker]]:
    """Workers whose handlers sleep for an hour: killed at the end, not stopped."""
    workers: list[FaultWorker] = []
    yield workers
    for w in workers:
        w.proc.kill()


def _config(workers: list[FaultWorker], **routing: Any) -> dict[str, Any]:
    return {
        "health": {"interval_s": 0.3, "timeout_s": 1},
        "timeouts": {"connect_s": 2, "first_byte_s": FIRST_BYTE_S, "idle_s": 30,
                     "total_s": TOTAL_S},
        "routing": {"max_attempts": 3, **routing},
        "workers": [{"name": f"w{i}", "url": w.url} for i, w in enumerate(workers)],
    }


async def _all_healthy(http: aiohttp.ClientSession, hub: HubProcess) -> None:
    async def healthy() -> bool:
        return all(w["healthy"] for w in (await hub_workers(http, hub.url)).values())
    await until(healthy, timeout=30, what="every worker healthy")


async def _requests(http: aiohttp.ClientSession, workers: list[FaultWorker]) -> int:
    return sum([(await fault_stats(http, w.url))["requests"] for w in workers])


async def _failures(http: aiohttp.ClientSession, hub: HubProcess) -> dict[str, int]:
    return {name: w["breaker"]["window_failures"]
            for name, w in (await hub_workers(http, hub.url)).items()}


async def test_non_stream_answer_may_take_until_total_once_accepted(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess]) -> None:
    """Headers at once, the body four first-byte allowances later: a 200, not a 504."""
    worker = make_fault(mode="late_body", delay_s=4 * FIRST_BYTE_S)
    hub = make_hub(_config([worker]))
    async with session() as http:
        await _all_healthy(http, hub)
        status, _, doc = await post_json(http, f"{hub.url}/v1/chat/completions",
                                         chat("fault-model"))
    assert status == 200, doc
    assert doc["choices"][0]["message"]["content"] == "ok"


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_timeout_after_acceptance_is_not_retried_elsewhere(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        killed_after: list[FaultWorker], stream: bool) -> None:
    """Two workers that send headers and then nothing useful: one 504, one worker's
    slot used, and that worker's breaker charged."""
    mode = "trickle" if stream else "late_body"  # trickle: keep-alive bytes, no event
    workers = [make_fault(mode=mode, delay_s=0.05 if stream else 3600) for _ in range(2)]
    killed_after.extend(workers)
    hub = make_hub(_config(workers))
    async with session() as http:
        await _all_healthy(http, hub)
        url, body = f"{hub.url}/v1/chat/completions", chat("fault-model", stream=stream)
        if stream:
            result = await read_stream(http, url, body)
            status, error = result.status, result.body
        else:
            status, _, doc = await post_json(http, url, body)
            error = str(doc).encode()
        assert status == 504 and b"upstream_timeout" in error, error
        assert await _requests(http, workers) == 1
        assert sorted((await _failures(http, hub)).values()) == [0, 1]


async def test_retry_on_timeout_restores_failover(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        killed_after: list[FaultWorker]) -> None:
    slow = make_fault(mode="late_body", delay_s=3600)
    good = make_fault()
    killed_after.append(slow)
    hub = make_hub(_config([slow, good], retry_on_timeout=True))
    async with session() as http:
        await _all_healthy(http, hub)
        for _ in range(2):  # round robin: one of them starts on the slow worker
            status, worker, _ = await post_json(http, f"{hub.url}/v1/chat/completions",
                                                chat("fault-model"))
            assert (status, worker) == (200, "w1")
        assert (await fault_stats(http, slow.url))["requests"] == 1


async def test_no_headers_within_first_byte_is_still_failed_over(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        killed_after: list[FaultWorker]) -> None:
    """A worker that never answers at all has not accepted anything: try the next."""
    hang, good = make_fault(mode="hang"), make_fault()
    killed_after.append(hang)
    hub = make_hub(_config([hang, good]))
    async with session() as http:
        await _all_healthy(http, hub)
        for _ in range(2):
            status, worker, _ = await post_json(http, f"{hub.url}/v1/chat/completions",
                                                chat("fault-model"))
            assert (status, worker) == (200, "w1")


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_query_of_death_stops_after_two_workers_and_one_charge(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        stream: bool) -> None:
    """Three workers that answer 500 to one prompt: that request reaches two of them, is
    charged to one breaker, and the workers keep serving everything else."""
    workers = [make_fault() for _ in range(3)]
    for w in workers:
        w.control(poison="DEATH")
    hub = make_hub(_config(workers))
    url = f"{hub.url}/v1/chat/completions"
    async with session() as http:
        await _all_healthy(http, hub)
        poison = chat("fault-model", stream=stream, content="DEATH")
        if stream:
            result = await read_stream(http, url, poison)
            status, error = result.status, result.body
        else:
            status, _, doc = await post_json(http, url, poison)
            error = str(doc).encode()
        assert status == 502 and b"upstream_error" in error, error
        assert await _requests(http, workers) == 2
        assert sorted((await _failures(http, hub)).values()) == [0, 0, 1]
        for _ in range(3):
            status, _, doc = await post_json(http, url, chat("fault-model"))
            assert status == 200, doc


async def test_a_worker_broken_for_every_request_is_still_charged_every_time(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess]) -> None:
    """The first 5xx of each request counts: a worker that fails everything, next to a
    good one, opens its breaker while every client request succeeds."""
    bad, good = make_fault(mode="error500"), make_fault()
    hub = make_hub({**_config([bad, good]),
                    "resilience": {"breaker": {"consecutive_failures": 3, "cooldown_s": 60,
                                               "max_cooldown_s": 60}}})
    async with session() as http:
        await _all_healthy(http, hub)
        for _ in range(8):
            status, worker, _ = await post_json(http, f"{hub.url}/v1/chat/completions",
                                                chat("fault-model"))
            assert (status, worker) == (200, "w1")
        assert (await hub_workers(http, hub.url))["w0"]["breaker"]["state"] == "open"
