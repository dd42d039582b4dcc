"""Probing an OpenAI-compatible server: ``GET /models`` is health and model list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub.probing import probe
from hub.probing.http import new_pool
from hub.probing.openai import parse_model_ids
from hub.upstream import Pool
from tests.probing.fakes import Server, fake_openai, redirecting

TIMEOUT = 5.0


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    pool = new_pool()
    yield pool
    pool.close()


async def test_models_with_and_without_the_key(pool: Pool) -> None:
    server = Server(fake_openai(["gpt-x", "gpt-y"], key="sk-test"))
    await server.start()
    try:
        base = f"{server.url}/v1"
        ok = await probe(pool, "openai", base, {"Authorization": "Bearer sk-test"}, TIMEOUT)
        refused = await probe(pool, "openai", base, None, TIMEOUT)
    finally:
        await server.stop()
    assert (ok.healthy, ok.detail, ok.models) == (True, "ok", ("gpt-x", "gpt-y"))
    assert (refused.healthy, refused.reachable, refused.detail) == \
        (False, True, "/models: HTTP 401")


async def test_a_redirect_is_not_followed(pool: Pool) -> None:
    target = Server(fake_openai(["gpt-x"]))
    await target.start()
    redirect = Server(redirecting(target.url, status=301))
    await redirect.start()
    try:
        result = await probe(pool, "openai", f"{redirect.url}/v1", None, TIMEOUT)
    finally:
        await redirect.stop()
        await target.stop()
    assert not result.healthy
    assert result.detail == "/models: HTTP 301 (redirects are not followed)"


@pytest.mark.parametrize(("doc", "expected"), [
    ({"object": "list", "data": [{"id": "a"}, {"id": "b", "owned_by": "x"}]}, ("a", "b")),
    ({"data": [{"id": 1}, {"id": ""}, {}, "c", {"id": "d"}]}, ("d",)),
    ({"data": []}, ()),
    ({"data": None}, None),
    ([], None),
])
def test_parse_model_ids(doc: Any, expected: Any) -> None:
    assert parse_model_ids(doc) == expected
