"""The hub's prober runs hub.probing: it learns slots and router-mode loaded models,
does not follow redirects, and refuses oversized answers, like the agent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from hub.config.schema import Health
from hub.config.workers import WorkerSpec
from hub.fleet.prober import Prober
from hub.fleet.registry import Registry, Worker
from hub.probing.http import MAX_ANSWER_BYTES
from hub.upstream import Pool
from tests.conftest import workers_config
from tests.probing.fakes import HITS, fake_llamacpp, fake_openai, redirecting, serving
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker


async def _after_a_round(pool: Pool, app: web.Application, *, path: str = "",
                        **spec: Any) -> Worker:
    """The registry's worker ``w`` (served by ``app``) after one round of probes."""
    async with serving(app) as server:
        registry = Registry([WorkerSpec(name="w", url=f"{server.url}{path}", **spec)])
        await Prober(registry, pool, lambda: Health(timeout_s=5.0)).probe_all()
    worker = registry.get("w")
    assert worker is not None
    return worker


async def test_slots_and_router_mode_loaded_models(pool: Pool) -> None:
    w = await _after_a_round(pool, fake_llamacpp(slots=3, busy=2,
                                                 router={"a": "loaded", "b": "unloaded"}))
    assert w.healthy and w.detail == "ok"
    assert (w.slots_total, w.slots_busy) == (3, 2)
    assert (w.models, w.loaded_models) == (frozenset({"a", "b"}), frozenset({"a"}))


async def test_a_redirecting_worker_is_down_and_the_redirect_not_followed(
        pool: Pool) -> None:
    async with serving(fake_llamacpp()) as real:
        w = await _after_a_round(pool, redirecting(real.url))
    assert not w.healthy and w.detail == "/health: HTTP 302 (redirects are not followed)"
    assert real.app[HITS] == {}


async def test_an_oversized_answer_takes_a_worker_down(pool: Pool) -> None:
    w = await _after_a_round(pool, fake_llamacpp(sizes={"/health": MAX_ANSWER_BYTES + 1},
                                                 chunked=True))
    assert not w.healthy and w.detail == "/health: answer over 4 MiB"


async def test_openai_workers_are_probed_with_their_api_key(
        pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-1")
    w = await _after_a_round(pool, fake_openai(["gpt-x"], key="sk-1"), path="/v1",
                             kind="openai", api_key_env="UPSTREAM_KEY")
    assert w.healthy and w.models == frozenset({"gpt-x"})


def test_admin_workers_shows_slots_of_a_config_worker(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    """A real hub probing a real llama-server (--slots, 3 slots) it knows from its
    config, not from an agent."""
    worker = make_llama("tiny", slots=3)
    hub = make_hub(workers_config(worker))
    w0 = hub.workers()["w0"]
    assert (w0["healthy"], w0["source"]) == (True, "config")
    assert (w0["slots_total"], w0["slots_busy"]) == (3, 0)
    assert (w0["models"], w0["loaded_models"]) == (["tiny"], ["tiny"])
