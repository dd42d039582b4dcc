"""probe(): one entry for every worker kind, and it never raises."""

from __future__ import annotations

import pytest

from hub.probing import ProbeResult, llamacpp, probe
from hub.upstream import Pool
from tests.probing.fakes import fake_llamacpp, probe_app


async def test_an_unknown_kind_is_an_unhealthy_result(pool: Pool) -> None:
    result = await probe(pool, "vllm", "http://127.0.0.1:1", None, 1.0)
    assert result == ProbeResult(healthy=False, reachable=False,
                                 detail="no probe for worker kind 'vllm'")


async def test_a_crash_inside_a_probe_is_an_unhealthy_result(
        pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(llamacpp, "parse_slots", broken)
    result = await probe_app(pool, fake_llamacpp())
    assert result == ProbeResult(healthy=False, reachable=False,
                                 detail="probe error: KeyError")


async def test_a_trailing_slash_in_the_url_is_harmless(pool: Pool) -> None:
    result = await probe_app(pool, fake_llamacpp(model="m"), path="/")
    assert result.healthy and result.models == ("m",)
