"""Probing workers: a real llama-server (with and without /slots), fakes for the rest."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.client import fetch, open_pool
from agent.config import WorkerTarget, make_target
from agent.probe import (
    WorkerStatus,
    parse_llamacpp_models,
    parse_llamacpp_slots,
    parse_ollama_ps,
    parse_ollama_tags,
    probe,
)
from hub.upstream import Pool
from tests.agent.fakes import OLLAMA_PS, OLLAMA_TAGS, Server, fake_llamacpp, fake_ollama
from tests.support.llama import LlamaWorker
from tests.support.procs import ROOT, free_port

TIMEOUT = 5.0


def target(url: str, kind: str = "llamacpp") -> WorkerTarget:
    return make_target("box", url, kind, None, None)


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    async with open_pool() as pool:
        yield pool


# -- real llama.cpp --------------------------------------------------------------------


async def test_real_llama_server_with_slots(make_llama: Callable[..., LlamaWorker],
                                            pool: Pool) -> None:
    worker = make_llama("tiny", slots=4)
    status = await probe(pool, target(worker.url), TIMEOUT)
    assert status == WorkerStatus(target(worker.url), reachable=True, healthy=True,
                                  models=("tiny",), loaded_models=("tiny",), slots_total=4,
                                  slots_busy=0)
    assert status.to_json(None) == {
        "name": f"box-llamacpp-{worker.port}", "url": worker.url, "kind": "llamacpp",
        "models": ["tiny"], "loaded_models": ["tiny"], "slots_total": 4, "slots_busy": 0,
        "healthy": True, "vram_free_mb": None}

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
            busy = (await probe(pool, target(worker.url), TIMEOUT)).slots_busy
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
    status = await probe(pool, target(worker.url), TIMEOUT)
    assert status.healthy and status.models == ("tiny",)
    assert (status.slots_total, status.slots_busy) == (2, None)


def test_once_print_next_to_real_llama_server(make_llama: Callable[..., LlamaWorker],
                                              tmp_path: Path) -> None:
    worker = make_llama("tiny", slots=4)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent_id: gpu-box-1\nadvertise_host: 10.0.0.5\ngpu: auto\n"
                   f"workers:\n  - url: {worker.url}\n    kind: llamacpp\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPOKEHUB_AGENT_TOKEN": "never-printed"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(cfg), "--once",
                           "--print"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "never-printed" not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"agent_id", "version", "interval_s", "host", "workers"}
    assert (doc["agent_id"], doc["version"], doc["interval_s"]) == ("gpu-box-1", "0.1.0", 5)
    assert set(doc["host"]) == {"hostname", "gpus", "ram_total_mb", "ram_available_mb",
                                "cpu_count", "load1"}
    assert doc["workers"] == [{
        "name": f"gpu-box-1-llamacpp-{worker.port}", "url": f"http://10.0.0.5:{worker.port}",
        "kind": "llamacpp", "models": ["tiny"], "loaded_models": ["tiny"], "slots_total": 4,
        "slots_busy": 0, "healthy": True, "vram_free_mb": doc["workers"][0]["vram_free_mb"]}]


# -- fakes: states a real server is hard to put in ------------------------------------


async def test_unreachable_and_loading(pool: Pool) -> None:
    down = await probe(pool, target(f"http://127.0.0.1:{free_port()}"), TIMEOUT)
    assert (down.reachable, down.healthy, down.detail) == \
        (False, False, "cannot connect: Connection refused")
    server = Server(fake_llamacpp(health=503))
    await server.start()
    try:
        loading = await probe(pool, target(server.url), TIMEOUT)
    finally:
        await server.stop()
    assert (loading.reachable, loading.healthy, loading.detail) == \
        (True, False, "loading model")


async def test_fake_llamacpp_busy_slots_and_404_fallback(
        pool: Pool) -> None:
    for slots_status, expected in ((200, (4, 1)), (404, (4, None)), (500, (None, None))):
        server = Server(fake_llamacpp(slots=4, busy=1, slots_status=slots_status))
        await server.start()
        try:
            status = await probe(pool, target(server.url), TIMEOUT)
        finally:
            await server.stop()
        assert status.healthy
        assert (status.slots_total, status.slots_busy) == expected


async def test_ollama(pool: Pool) -> None:
    server = Server(fake_ollama())
    await server.start()
    try:
        status = await probe(pool, target(server.url, "ollama"), TIMEOUT)
    finally:
        await server.stop()
    assert status.healthy and status.detail == "ok" and status.version == "0.5.7"
    assert status.models == ("llama3.2:latest", "qwen2.5:7b")
    assert status.loaded_models == ("llama3.2:latest",)
    assert status.vram_used_mb == 3179116544 // (1024 * 1024)
    assert (status.slots_total, status.slots_busy) == (None, None)
    assert status.to_json(1000)["kind"] == "ollama"


async def test_ollama_not_running(pool: Pool) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status = await probe(pool, target(url, "ollama"), TIMEOUT)
    assert not status.reachable and not status.healthy
    # A llama.cpp server on the Ollama port is not mistaken for Ollama.
    server = Server(fake_llamacpp())
    await server.start()
    try:
        wrong = await probe(pool, target(server.url, "ollama"), TIMEOUT)
    finally:
        await server.stop()
    assert wrong.reachable and not wrong.healthy and wrong.detail == "/api/version: HTTP 404"


# -- parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "expected"), [
    ({"data": [{"id": "a"}, {"id": "b"}]}, (("a", "b"), ("a", "b"))),
    # router mode: several models, only some loaded
    ({"data": [{"id": "a", "status": {"value": "loaded"}},
               {"id": "b", "status": {"value": "unloaded"}}, {"id": 3}, "x"]},
     (("a", "b"), ("a",))),
    ({"models": []}, None),
    (None, None),
])
def test_parse_llamacpp_models(doc: Any, expected: Any) -> None:
    assert parse_llamacpp_models(doc) == expected


@pytest.mark.parametrize(("doc", "expected"), [
    ([{"id": 0, "is_processing": False}, {"id": 1, "is_processing": True}], (2, 1)),
    ([{"id": 0, "state": 0}, {"id": 1, "state": 1}, {"id": 2, "state": 1}], (3, 2)),
    ([], (0, 0)),
    ({"error": "x"}, None),
])
def test_parse_llamacpp_slots(doc: Any, expected: Any) -> None:
    assert parse_llamacpp_slots(doc) == expected


def test_parse_ollama() -> None:
    assert parse_ollama_tags(OLLAMA_TAGS) == ("llama3.2:latest", "qwen2.5:7b")
    assert parse_ollama_tags({"models": []}) == ()
    assert parse_ollama_tags({}) is None
    assert parse_ollama_ps(OLLAMA_PS) == (("llama3.2:latest",), 3031)
    assert parse_ollama_ps({"models": [{"model": "m", "size_vram": "x"}]}) == (("m",), 0)
