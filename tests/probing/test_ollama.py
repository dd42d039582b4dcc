"""Probing Ollama against the conformance fake (a real process), and its parsers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub.probing import probe
from hub.probing.ollama import parse_ps, parse_tags
from hub.upstream import Pool
from tests.probing.fakes import OLLAMA_PS, OLLAMA_TAGS, fake_llamacpp, fake_ollama, probe_app
from tests.support.ollama_proc import OllamaFake
from tests.support.procs import free_port

TIMEOUT = 5.0
MODELS = ["llama3.2:3b", "qwen2:0.5b"]


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaFake]:
    fake = OllamaFake(tmp_path_factory.mktemp("ollama"), models=MODELS,
                      loaded=["llama3.2:3b"]).start()
    yield fake
    fake.stop()


@pytest.fixture
def own_ollama(tmp_path: Path) -> Iterator[OllamaFake]:
    """A fake this test may change or stop."""
    fake = OllamaFake(tmp_path, models=["llama3.2:3b"]).start()
    yield fake
    fake.stop()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


async def test_installed_and_loaded_models_with_their_vram(ollama: OllamaFake,
                                                           pool: Pool) -> None:
    result = await probe(pool, "ollama", ollama.url, None, TIMEOUT)
    assert (result.healthy, result.detail, result.version) == \
        (True, "ok (ollama 0.5.7)", "0.5.7")
    assert result.models is not None and frozenset(result.models) == frozenset(MODELS)
    assert result.loaded_models == ("llama3.2:3b",)
    ps = _get(f"{ollama.url}/api/ps")
    assert result.vram_used_bytes == sum(m["size_vram"] for m in ps["models"]) > 0
    assert (result.slots_total, result.slots_busy) == (None, None)


async def test_a_pulled_model_appears_on_the_next_probe(own_ollama: OllamaFake,
                                                        pool: Pool) -> None:
    before = await probe(pool, "ollama", own_ollama.url, None, TIMEOUT)
    assert before.models == ("llama3.2:3b",)
    assert before.loaded_models == () and before.vram_used_bytes == 0
    own_ollama.control(pull="mistral:7b", load="mistral:7b")
    after = await probe(pool, "ollama", own_ollama.url, None, TIMEOUT)
    assert after.models is not None
    assert frozenset(after.models) == frozenset({"llama3.2:3b", "mistral:7b"})
    assert after.loaded_models == ("mistral:7b",)
    assert after.vram_used_bytes and after.vram_used_bytes > 0


async def test_unhealthy_when_the_server_answers_503(own_ollama: OllamaFake,
                                                     pool: Pool) -> None:
    own_ollama.control(healthy=False)
    result = await probe(pool, "ollama", own_ollama.url, None, TIMEOUT)
    assert (result.healthy, result.reachable, result.detail) == \
        (False, True, "/api/version: HTTP 503")
    assert result.models is None  # unknown this round: the registry keeps what it had


async def test_unhealthy_when_the_process_is_gone(own_ollama: OllamaFake,
                                                  pool: Pool) -> None:
    assert (await probe(pool, "ollama", own_ollama.url, None, TIMEOUT)).healthy
    own_ollama.stop()
    result = await probe(pool, "ollama", own_ollama.url, None, TIMEOUT)
    assert (result.healthy, result.reachable, result.detail) == \
        (False, False, "cannot connect: Connection refused")


async def test_not_running_or_not_ollama(pool: Pool) -> None:
    down = await probe(pool, "ollama", f"http://127.0.0.1:{free_port()}", None, TIMEOUT)
    assert not down.reachable and not down.healthy
    # A llama.cpp server on the Ollama port is not mistaken for Ollama.
    wrong = await probe_app(pool, fake_llamacpp(), "ollama")
    assert (wrong.reachable, wrong.healthy, wrong.detail) == \
        (True, False, "/api/version: HTTP 404")


async def test_models_in_the_order_ollama_lists_them(pool: Pool) -> None:
    result = await probe_app(pool, fake_ollama(), "ollama")
    assert result.models == ("llama3.2:latest", "qwen2.5:7b")
    assert result.loaded_models == ("llama3.2:latest",)


async def test_unreadable_listings_keep_it_healthy_and_say_so(pool: Pool) -> None:
    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": "0.9.0"})

    async def tags(_: web.Request) -> web.Response:
        return web.Response(text="<html>not a model list</html>")

    async def ps(_: web.Request) -> web.Response:
        return web.json_response({"error": "boom"}, status=500)

    app = web.Application()
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    result = await probe_app(pool, app, "ollama")
    assert result.healthy
    assert result.detail == "/api/tags: not a model list; /api/ps: HTTP 500 (ollama 0.9.0)"
    assert (result.models, result.loaded_models, result.vram_used_bytes) == (None, None, None)


def test_parse_tags_and_ps() -> None:
    assert parse_tags(OLLAMA_TAGS) == ("llama3.2:latest", "qwen2.5:7b")
    assert parse_tags({"models": []}) == ()
    assert parse_tags({"models": [{"model": "only-model-key"}, {"name": ""}, 3]}) == \
        ("only-model-key",)
    assert parse_tags({}) is None
    assert parse_ps(OLLAMA_PS) == (("llama3.2:latest",), 3179116544)
    assert parse_ps({"models": [{"model": "m", "size_vram": "x"},
                                {"name": "n", "size_vram": True},
                                {"name": "o", "size_vram": -5}]}) == (("m", "n", "o"), 0)
    assert parse_ps({"models": None}) is None
