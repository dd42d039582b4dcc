"""The proxy picks only workers that take the call's route."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec
from hub.errors import ModelNotFound, RouteNotServed, UpstreamError
from hub.fleet.registry import ProbeResult, Registry
from hub.forward.call import Call
from hub.forward.proxy import Proxy


class _Pool:
    def __init__(self) -> None:
        self.urls: list[str] = []

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Any:
        self.urls.append(url)
        raise UpstreamError("refused for the test")


def _proxy() -> tuple[Proxy, _Pool]:
    registry = Registry([WorkerSpec("ollama", "http://o", kind="ollama"),
                         WorkerSpec("llama", "http://l"),
                         WorkerSpec("cloud", "http://c/v1", kind="openai")])
    for w in registry:
        registry.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"m"})))
    pool = _Pool()
    return Proxy(registry, pool, parse_config({})), pool  # type: ignore[arg-type]


@pytest.mark.parametrize("route, urls", [
    ("/messages", ["http://l/v1/messages"]),
    ("/tokenize", ["http://l/tokenize"]),
    ("/api/chat", ["http://o/api/chat", "http://l/v1/chat/completions",
                   "http://c/v1/chat/completions"]),
    ("/api/embed", ["http://o/api/embed", "http://l/v1/embeddings", "http://c/v1/embeddings"]),
])
async def test_only_workers_that_take_the_route_are_tried(route: str, urls: list[str]) -> None:
    proxy, pool = _proxy()
    call = Call(request_id="r", route=route, model="m", body=b'{"model": "m", "input": "x"}')
    with pytest.raises(UpstreamError):
        await proxy.forward(make_mocked_request("POST", "/"), call)
    assert sorted(pool.urls) == sorted(urls)


async def test_a_model_served_but_not_on_the_route_is_a_404_of_its_own() -> None:
    proxy, pool = _proxy()
    proxy.registry.remove("llama")
    with pytest.raises(RouteNotServed) as err:
        await proxy.forward(make_mocked_request("POST", "/"),
                            Call(request_id="r", route="/messages", model="m"))
    assert err.value.status == 404 and err.value.code == "model_not_supported_on_route"
    with pytest.raises(ModelNotFound):
        await proxy.forward(make_mocked_request("POST", "/"),
                            Call(request_id="r", route="/messages", model="other"))
    assert pool.urls == []
