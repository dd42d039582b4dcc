"""The hub's ``state`` section: no link with ``backend: memory``; with ``redis`` a link
named by the environment, its metrics, and reloads that cannot move it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hub.config.kit import ConfigError
from hub.config.schema import Config, parse_config
from hub.fleet.registry import Registry
from hub.forward.proxy import Proxy
from hub.resilience.breaker import Outcome
from hub.runtime.hub import Hub
from hub.state.config import StateConfig
from hub.state.redis_link import RedisLink


def test_memory_backend_has_no_link() -> None:
    hub = Hub(Config())
    assert hub.shared is None
    assert b"spokehub_state_backend_up" not in hub.metrics.render()


async def test_redis_backend_link_metrics_and_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TEST_REDIS", "redis://127.0.0.1:9/0")
    cfg = replace(Config(), state=StateConfig(backend="redis", url_env="HUB_TEST_REDIS",
                                              namespace="fleet1"))
    hub = Hub(cfg)
    try:
        assert hub.shared is not None and isinstance(hub.shared.link, RedisLink)
        assert hub.shared.link.key("agent", "x") == "fleet1:agent:x"
        assert b"spokehub_state_backend_up 0.0" in hub.metrics.render()
        changes = hub.apply(replace(cfg, state=replace(cfg.state, namespace="fleet2",
                                                       rate_limits_on_outage="closed")))
        assert any("state: backend, url_env and namespace need a restart" in c
                   for c in changes)
        assert hub.config.state.namespace == "fleet1"
        assert hub.config.state.rate_limits_on_outage == "closed"
    finally:
        assert hub.shared is not None
        await hub.shared.stop()


def test_redis_backend_without_url_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_TEST_REDIS", raising=False)
    cfg = replace(Config(), state=StateConfig(backend="redis", url_env="HUB_TEST_REDIS"))
    with pytest.raises(ConfigError, match="HUB_TEST_REDIS"):
        Hub(cfg)


async def test_breaker_listeners_survive_a_reload_that_replaces_the_breakers() -> None:
    """Sharing listens on the proxy's breakers; a reload with new breaker settings
    builds a new set, which must keep the listeners."""
    registry = Registry()
    proxy = Proxy(registry, None, parse_config({}))  # type: ignore[arg-type]
    heard: list[str] = []
    proxy.breakers.listeners.append(lambda name, old, new: heard.append(f"{name} {new}"))
    old = proxy.breakers
    proxy.configure(parse_config({"resilience": {"breaker": {"consecutive_failures": 1}}}))
    assert proxy.breakers is not old
    proxy.breakers.get("w0").record(Outcome.FAILURE)
    assert heard == ["w0 open"]
