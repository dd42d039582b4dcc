"""The cache across a reload: kept with its pepper, refused without one, dropped when
turned off, and its series on /metrics only while it is on."""

from __future__ import annotations

import pytest

from hub.config.kit import ConfigError
from hub.config.schema import parse_config
from hub.runtime.hub import Hub

ON = {"response_cache": {"enabled": True, "pepper_env": "TEST_RELOAD_PEPPER"}}


def test_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RELOAD_PEPPER", "x" * 32)
    hub = Hub(parse_config({}))
    assert hub.cache is None
    assert b"spokehub_response_cache" not in hub.metrics.render()
    assert "response_cache: updated" in hub.apply(parse_config(ON))
    cache = hub.cache
    assert cache is not None
    cache.store.put(b"k" * 32, b"{}", "application/json")
    assert b"spokehub_response_cache_entries 1.0" in hub.metrics.render()
    hub.apply(parse_config({"response_cache": {**ON["response_cache"], "ttl_s": 5}}))
    assert hub.cache is cache and len(cache.store) == 1 and cache.store.ttl_s == 5
    monkeypatch.delenv("TEST_RELOAD_PEPPER")
    with pytest.raises(ConfigError, match="TEST_RELOAD_PEPPER"):
        hub.apply(parse_config({"response_cache": {**ON["response_cache"], "ttl_s": 9}}))
    assert hub.cache is cache and cache.store.ttl_s == 5  # nothing changed
    hub.apply(parse_config({}))
    assert hub.cache is None
    assert b"spokehub_response_cache" not in hub.metrics.render()
