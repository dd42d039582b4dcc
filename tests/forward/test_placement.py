"""The proxy and the cache_aware policy: choices kept on the call, taken back when an
attempt fails, forgotten with the worker; no prompt keys under the other policies."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec
from hub.errors import UpstreamError
from hub.fleet.registry import ProbeResult, Registry
from hub.forward import placement
from hub.forward.call import Call
from hub.forward.proxy import Proxy
from hub.routing import CacheAware

CHAT = {"model": "m", "messages": [{"role": "system", "content": "s" * 600},
                                   {"role": "user", "content": "hello " * 50}]}


class _Pool:
    def __init__(self) -> None:
        self.urls: list[str] = []

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Any:
        self.urls.append(url)
        raise UpstreamError("refused for the test")


def _proxy(policy: str = "cache_aware") -> tuple[Proxy, _Pool]:
    registry = Registry([WorkerSpec("a", "http://a"), WorkerSpec("b", "http://b")])
    for w in registry:
        registry.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"m"})))
    pool = _Pool()
    proxy = Proxy(registry, pool, parse_config({"routing": {"policy": policy}}))  # type: ignore[arg-type]
    registry.on_remove.append(proxy.forget)
    registry.on_health.append(proxy.health_changed)
    return proxy, pool


def _call(proxy: Proxy, route: str = "/chat/completions", session: str | None = None) -> Call:
    call = Call(request_id="r", route=route, model="m", body=b"{}")
    headers = {"X-Session-ID": session} if session else {}
    call.route_req = placement.route_request(proxy.policy, route, "m", CHAT, tenant="t",
                                             headers=headers)
    return call


def test_prompt_keys_only_under_cache_aware_and_for_prompt_routes() -> None:
    proxy, _ = _proxy()
    assert _call(proxy).route_req is not None
    assert _call(proxy, "/embeddings").route_req is None
    assert _call(proxy, "/api/chat", session="s").route_req.session_key == "s"  # type: ignore[union-attr]
    rr, _ = _proxy("round_robin")
    assert _call(rr).route_req is None


def test_pick_keeps_the_choice_and_a_call_without_key_is_placed_by_load() -> None:
    proxy, _ = _proxy()
    call = _call(proxy)
    worker = proxy.pick("m", [], "/chat/completions", call)
    assert worker is not None and call.choice is not None
    assert call.choice.worker is worker and call.choice.reason == "prefix-miss"
    again = _call(proxy)
    assert proxy.pick("m", [], "/chat/completions", again) is worker
    assert again.choice is not None and again.choice.reason == "prefix-hit"
    assert placement.route_header(again) == {"X-Spokehub-Route": again.choice.header()}
    plain = Call(request_id="e", route="/embeddings", model="m")
    assert proxy.pick("m", [], "/embeddings", plain) is not None
    assert plain.choice is not None and plain.choice.reason == "load"


def test_round_robin_gives_no_reason() -> None:
    proxy, _ = _proxy("round_robin")
    call = _call(proxy)
    assert proxy.pick("m", [], "/chat/completions", call) is not None
    assert call.choice is None and placement.route_header(call) == {}


async def test_failed_attempts_take_their_prefix_back() -> None:
    proxy, pool = _proxy()
    policy = proxy.policy
    assert isinstance(policy, CacheAware)
    call = _call(proxy)
    with pytest.raises(UpstreamError):
        await proxy.forward(make_mocked_request("POST", "/"), call)
    assert len(pool.urls) == 2  # both workers tried
    assert all(policy.index.size(name) == 0 for name in ("a", "b"))


def test_served_and_4xx() -> None:
    proxy, _ = _proxy()
    policy = proxy.policy
    assert isinstance(policy, CacheAware)
    call = _call(proxy)
    worker = proxy.pick("m", [], "/chat/completions", call)
    assert worker is not None
    placement.served(policy, call, 200)
    assert policy.index.size(worker.name) > 0
    refused = _call(proxy, session="x")
    w2 = proxy.pick("m", [], "/chat/completions", refused)
    assert w2 is worker
    placement.served(policy, refused, 400)  # the prefix it had before stays
    assert policy.index.size(worker.name) > 0
    cut = _call(proxy)
    proxy.pick("m", [], "/chat/completions", cut)
    cut.error = "upstream_error"
    before = policy.index.size(worker.name)
    placement.served(policy, cut, 200)  # a cut stream: neither
    assert policy.index.size(worker.name) == before


def test_worker_down_removed_or_moved_is_forgotten() -> None:
    proxy, _ = _proxy()
    policy = proxy.policy
    assert isinstance(policy, CacheAware)
    call = _call(proxy, session="s1")
    worker = proxy.pick("m", [], "/chat/completions", call)
    assert worker is not None and policy.index.size(worker.name) > 0
    proxy.registry.mark_unreachable(worker, "connect failed")
    assert policy.index.size(worker.name) == 0
    other = next(w for w in proxy.registry if w is not worker)
    nxt = _call(proxy, session="s1")
    assert proxy.pick("m", [], "/chat/completions", nxt) is other
    assert nxt.choice is not None and nxt.choice.reason == "repin"
    proxy.registry.replace_spec(other, WorkerSpec(other.name, "http://elsewhere"))
    assert policy.index.size(other.name) == 0
    proxy.registry.apply_probe(worker, ProbeResult(healthy=True, models=frozenset({"m"})))
    proxy.pick("m", [], "/chat/completions", _call(proxy))
    assert policy.index.size(worker.name) > 0
    proxy.registry.remove(worker.name)
    assert policy.index.size(worker.name) == 0


def test_reload_rebuilds_the_policy_when_its_settings_change() -> None:
    proxy, _ = _proxy()
    first = proxy.policy
    proxy.configure(parse_config({"routing": {"policy": "cache_aware"}}))
    assert proxy.policy is first
    proxy.configure(parse_config({"routing": {"policy": "cache_aware",
                                              "cache_aware": {"hit_threshold": 0.5}}}))
    assert isinstance(proxy.policy, CacheAware) and proxy.policy.cfg.hit_threshold == 0.5
