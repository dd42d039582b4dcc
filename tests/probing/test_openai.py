"""Probing an OpenAI-compatible server: ``GET /models`` is health and model list."""

from __future__ import annotations

from typing import Any

import pytest

from hub.probing import probe
from hub.probing.openai import parse_model_ids
from hub.upstream import Pool
from tests.probing.fakes import fake_openai, probe_app, redirecting, serving

TIMEOUT = 5.0


async def test_models_with_and_without_the_key(pool: Pool) -> None:
    async with serving(fake_openai(["gpt-x", "gpt-y"], key="sk-test")) as server:
        base = f"{server.url}/v1"
        ok = await probe(pool, "openai", base, {"Authorization": "Bearer sk-test"}, TIMEOUT)
        refused = await probe(pool, "openai", base, None, TIMEOUT)
    assert (ok.healthy, ok.detail, ok.models) == (True, "ok", ("gpt-x", "gpt-y"))
    assert (refused.healthy, refused.reachable, refused.detail) == \
        (False, True, "/models: HTTP 401")


async def test_a_redirect_is_not_followed(pool: Pool) -> None:
    async with serving(fake_openai(["gpt-x"])) as target:
        result = await probe_app(pool, redirecting(target.url, status=301), "openai",
                                 path="/v1")
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
