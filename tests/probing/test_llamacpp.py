"""Probing llama.cpp: a real llama-server (with and without /slots), fakes for the rest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from hub.probing import ProbeResult, probe
from hub.probing.http import MAX_ANSWER_BYTES, fetch
from hub.probing.llamacpp import parse_models, parse_props_slots, parse_slots
from hub.upstream import Pool
from tests.probing.fakes import (
    HITS,
    Handler,
    fake_llamacpp,
    probe_app,
    redirecting,
    serving,
)
from tests.support.llama import LlamaWorker
from tests.support.procs import free_port

TIMEOUT = 5.0


async def _probe_fake(pool: Pool, **fake: Any) -> ProbeResult:
    return await probe_app(pool, fake_llamacpp(**fake))


# -- real llama.cpp --------------------------------------------------------------------


async def test_real_llama_server_with_slots(make_llama: Callable[..., LlamaWorker],
                                            pool: Pool) -> None:
    worker = make_llama("tiny", slots=4)
    result = await probe(pool, "llamacpp", worker.url, None, TIMEOUT)
    assert result == ProbeResult(healthy=True, detail="ok", models=("tiny",),
                                 loaded_models=("tiny",), slots_total=4, slots_busy=0)

    # Busy slots show up while completions run (each takes a fraction of a second
    # with the tiny model, so sample while they are in flight).
    async def generate() -> None:
        body = {"prompt": "Once upon a time", "n_predict": 480, "ignore_eos": True}
        status, _ = await fetch(pool, "POST", f"{worker.url}/completion", timeout_s=120,
                                headers={"Content-Type": "application/json"},
                                body=json.dumps(body).encode())
        assert status == 200

    seen_busy = 0
    for _ in range(5):
        jobs = asyncio.gather(generate(), generate())
        while not jobs.done():
            busy = (await probe(pool, "llamacpp", worker.url, None, TIMEOUT)).slots_busy
            seen_busy = max(seen_busy, busy or 0)
        await jobs
        if seen_busy:
            break
    assert 1 <= seen_busy <= 4


async def test_real_llama_server_without_slots_endpoint(
        make_llama: Callable[..., LlamaWorker], pool: Pool) -> None:
    worker = make_llama("tiny", slots=2, extra=["--no-slots"])
    slots_status, _ = await fetch(pool, "GET", f"{worker.url}/slots", timeout_s=TIMEOUT)
    assert slots_status == 501  # what the fallback is for
    result = await probe(pool, "llamacpp", worker.url, None, TIMEOUT)
    assert result.healthy and result.models == ("tiny",)
    assert (result.slots_total, result.slots_busy) == (2, None)


# -- fakes: states a real server is hard to put in ------------------------------------


async def test_unreachable_and_loading(pool: Pool) -> None:
    down = await probe(pool, "llamacpp", f"http://127.0.0.1:{free_port()}", None, TIMEOUT)
    assert (down.reachable, down.healthy, down.detail) == \
        (False, False, "cannot connect: Connection refused")
    assert down.models is None  # unknown this round: the registry keeps what it had
    loading = await _probe_fake(pool, health=503)
    assert (loading.reachable, loading.healthy, loading.detail) == \
        (True, False, "loading model")


async def test_busy_slots_and_the_props_fallback(pool: Pool) -> None:
    for slots_status, expected in ((200, (4, 1)), (404, (4, None)), (501, (4, None)),
                                   (500, (None, None))):
        result = await _probe_fake(pool, slots=4, busy=1, slots_status=slots_status)
        assert result.healthy and result.detail == "ok"
        assert (result.slots_total, result.slots_busy) == expected


async def test_router_mode_lists_all_models_and_loads_some(pool: Pool) -> None:
    result = await _probe_fake(pool, router={"a": "loaded", "b": "unloaded",
                                             "c": "loading"})
    assert result.healthy
    assert (result.models, result.loaded_models) == (("a", "b", "c"), ("a",))


async def test_a_redirect_is_not_followed(pool: Pool) -> None:
    async with serving(fake_llamacpp()) as healthy:
        result = await probe_app(pool, redirecting(healthy.url))
    assert (result.healthy, result.reachable) == (False, True)
    assert result.detail == "/health: HTTP 302 (redirects are not followed)"
    assert healthy.app[HITS] == {}  # nobody went where the redirect pointed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_answer_is_unreadable_not_cut_off(pool: Pool,
                                                             chunked: bool) -> None:
    big = MAX_ANSWER_BYTES + 1
    health = await _probe_fake(pool, sizes={"/health": big}, chunked=chunked)
    assert (health.healthy, health.reachable) == (False, True)
    assert health.detail == "/health: answer over 4 MiB"
    # Padded, the answers would still parse if they were cut off at the cap.
    models = await _probe_fake(pool, sizes={"/v1/models": big, "/slots": big},
                               chunked=chunked)
    assert models.healthy and models.detail == "/v1/models: answer over 4 MiB"
    assert (models.models, models.loaded_models) == (None, None)
    assert (models.slots_total, models.slots_busy) == (None, None)


async def test_the_timeout_covers_the_whole_probe(pool: Pool) -> None:
    """/health answers at once, /v1/models and /slots never: the probe still ends
    within its timeout, healthy, saying what it could not read."""
    app = fake_llamacpp()
    stall = asyncio.Event()

    @web.middleware
    async def hang(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/health":
            await stall.wait()
        return await handler(request)

    app.middlewares.append(hang)
    async with serving(app) as server:
        try:
            result = await probe(pool, "llamacpp", server.url, None, 1.5)
        finally:
            stall.set()  # before the server stops, or it waits for the stalled answers
    assert result.healthy and result.detail == "/v1/models: timed out"
    assert (result.models, result.slots_total) == (None, None)


# -- parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "expected"), [
    ({"data": [{"id": "a"}, {"id": "b"}]}, (("a", "b"), ("a", "b"))),
    # router mode: several models, only some loaded
    ({"data": [{"id": "a", "status": {"value": "loaded"}},
               {"id": "b", "status": {"value": "unloaded"}},
               {"id": "c", "status": {"value": "loading"}},
               {"id": "d", "status": "loaded"}, {"id": 3}, {"id": ""}, "x"]},
     (("a", "b", "c", "d"), ("a", "d"))),
    ({"data": []}, ((), ())),
    ({"models": []}, None),
    ({"data": {"id": "a"}}, None),
    (None, None),
])
def test_parse_models(doc: Any, expected: Any) -> None:
    assert parse_models(doc) == expected


@pytest.mark.parametrize(("doc", "expected"), [
    ([{"id": 0, "is_processing": False}, {"id": 1, "is_processing": True}], (2, 1)),
    ([{"id": 0, "state": 0}, {"id": 1, "state": 1}, {"id": 2, "state": 1}], (3, 2)),
    ([], (0, 0)),
    ({"error": "x"}, None),
])
def test_parse_slots(doc: Any, expected: Any) -> None:
    assert parse_slots(doc) == expected


@pytest.mark.parametrize(("doc", "expected"), [
    ({"total_slots": 4}, 4), ({"total_slots": 0}, 0), ({"total_slots": -1}, None),
    ({"total_slots": True}, None), ({"total_slots": "4"}, None), ([], None),
])
def test_parse_props_slots(doc: Any, expected: Any) -> None:
    assert parse_props_slots(doc) == expected
