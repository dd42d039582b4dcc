"""probe(): one entry for every worker kind, and it never raises."""

from __future__ import annotations

import pytest

from hub.probing import ProbeResult, llamacpp, probe
from hub.probing.http import new_pool
from hub.probing.session import ProbeSession
from tests.probing.fakes import Server, fake_llamacpp


async def test_an_unknown_kind_is_an_unhealthy_result() -> None:
    pool = new_pool()
    result = await probe(pool, "vllm", "http://127.0.0.1:1", None, 1.0)
    pool.close()
    assert result == ProbeResult(healthy=False, reachable=False,
                                 detail="no probe for worker kind 'vllm'")


async def test_a_crash_inside_a_probe_is_an_unhealthy_result(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(llamacpp, "parse_slots", broken)
    server = Server(fake_llamacpp())
    await server.start()
    pool = new_pool()
    try:
        result = await probe(pool, "llamacpp", server.url, None, 5.0)
    finally:
        pool.close()
        await server.stop()
    assert result == ProbeResult(healthy=False, reachable=False,
                                 detail="probe error: KeyError")


async def test_a_trailing_slash_in_the_url_is_harmless() -> None:
    server = Server(fake_llamacpp(model="m"))
    await server.start()
    pool = new_pool()
    try:
        session = ProbeSession(pool, f"{server.url}/", None, 5.0)
        status, doc = await session.get("/v1/models")
    finally:
        pool.close()
        await server.stop()
    assert status == 200 and doc["data"][0]["id"] == "m"
