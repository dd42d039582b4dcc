"""Active health checks and failover with real llama.cpp workers that get killed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai

from tests.conftest import workers_config
from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.procs import http_status

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def _client(hub: HubProcess) -> openai.OpenAI:
    return closing(openai.OpenAI(base_url=hub.base_url, api_key="unused", max_retries=0,
                                 timeout=30))


def _wait(pred: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def test_killed_worker_skipped_within_one_interval_and_rejoins(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a, b = make_llama(seed=0), make_llama(seed=1)
    interval = 0.5
    hub = make_hub(workers_config(a, b, health={"interval_s": interval, "timeout_s": 1}))
    assert all(w["healthy"] for w in hub.workers().values())

    b.kill()
    took = _wait(lambda: not hub.workers()["w1"]["healthy"], timeout=interval * 2 + 1)
    assert took <= interval * 2 + 1
    c = _client(hub)
    for _ in range(6):
        raw = c.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES,
                                                          max_tokens=1)
        assert raw.headers["x-spokehub-worker"] == "w0"
        assert raw.http_response.status_code == 200

    b.start()  # same port: the worker comes back
    _wait(lambda: hub.workers()["w1"]["healthy"], timeout=interval * 2 + 5)
    served = {c.chat.completions.with_raw_response.create(
        model="tiny", messages=MESSAGES, max_tokens=1).headers["x-spokehub-worker"]
        for _ in range(4)}
    assert served == {"w0", "w1"}


def test_failover_when_worker_dies_between_probes(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a, b = make_llama(seed=0), make_llama(seed=1)
    # Probes every 60 s: the hub cannot know b died; only failover saves the requests.
    hub = make_hub(workers_config(a, b, health={"interval_s": 60, "timeout_s": 1}))
    b.kill()
    c = _client(hub)
    statuses = []
    for _ in range(10):
        raw = c.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES,
                                                          max_tokens=1)
        statuses.append((raw.http_response.status_code, raw.headers["x-spokehub-worker"]))
    assert all(s == 200 for s, _ in statuses), statuses
    assert {w for _, w in statuses} == {"w0"}
    # Passive health marked it down right away, without waiting for a probe.
    assert hub.workers()["w1"]["healthy"] is False


def test_stream_failover_before_first_byte(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a, b = make_llama(seed=0), make_llama(seed=1)
    hub = make_hub(workers_config(a, b, health={"interval_s": 60, "timeout_s": 1}))
    b.kill()
    c = _client(hub)
    for _ in range(4):
        chunks = list(c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4,
                                                stream=True))
        assert chunks and chunks[-1].choices[0].finish_reason is not None


def test_readyz_follows_worker_health(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a = make_llama(seed=0)
    hub = make_hub(workers_config(a, health={"interval_s": 0.3, "timeout_s": 1}))
    assert hub.get_json("/readyz")["ready"] is True
    a.kill()
    _wait(lambda: http_status(f"{hub.url}/readyz") == 503, timeout=5)
    assert http_status(f"{hub.url}/healthz") == 200
