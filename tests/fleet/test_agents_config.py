"""The ``agents:`` section: keys, defaults (registration follows auth), start-up warnings."""

from __future__ import annotations

from typing import Any

import pytest

from hub.config.schema import ConfigError, parse_config
from hub.fleet.agent_policy import DEFAULT_ALLOWED_NETWORKS
from hub.runtime.hub import security_warnings

AUTH = {"enabled": True, "keys": [{"kid": "k", "alg": "HS256", "secret_env": "X"}]}


def test_registration_follows_auth_unless_set() -> None:
    assert parse_config({}).agents.enabled is False
    assert parse_config({"auth": AUTH}).agents.enabled is True
    assert parse_config({"agents": {"enabled": True}}).agents.enabled is True
    assert parse_config({"auth": AUTH, "agents": {"enabled": False}}).agents.enabled is False


def test_defaults() -> None:
    agents = parse_config({"auth": AUTH}).agents
    assert [str(n) for n in agents.allowed_networks] == list(DEFAULT_ALLOWED_NETWORKS)
    assert (agents.max_ids_per_token, agents.max_workers, agents.alias_targets) == \
        (16, 256, False)


def test_keys() -> None:
    agents = parse_config({"agents": {
        "allowed_networks": ["10.20.0.0/16", "fd00:1::/64", "169.254.169.254/32"],
        "max_ids_per_token": 1, "max_workers": 0, "alias_targets": True}}).agents
    assert [str(n) for n in agents.allowed_networks] == \
        ["10.20.0.0/16", "fd00:1::/64", "169.254.169.254/32"]
    assert (agents.max_ids_per_token, agents.max_workers, agents.alias_targets) == (1, 0, True)
    assert parse_config({"agents": {"allowed_networks": []}}).agents.allowed_networks == ()


@pytest.mark.parametrize(("agents", "message"), [
    ({"allowed_networks": "10.0.0.0/8"}, "agents.allowed_networks: must be a list"),
    ({"allowed_networks": ["10.0.0.1/8"]}, "agents.allowed_networks[0]: 10.0.0.1/8 has host"),
    ({"allowed_networks": ["lan"]}, "agents.allowed_networks[0]:"),
    ({"max_ids_per_token": 0}, "agents.max_ids_per_token: must be >= 1"),
    ({"max_workers": -1}, "agents.max_workers: must be >= 0"),
    ({"alias_targets": "yes"}, "agents.alias_targets: must be true or false"),
    ({"allowed_network": []}, "agents.allowed_network: unknown key"),
])
def test_bad_values_name_the_key(agents: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"agents": agents})
    assert message in str(err.value)


def test_security_warnings() -> None:
    assert security_warnings(parse_config({"auth": AUTH})) == []
    off = security_warnings(parse_config({}))
    assert "AUTH IS OFF" in off[0] and "only this machine" in off[0]
    assert "agent registration is off" in off[1]
    exposed = security_warnings(parse_config({"listen": {"host": "0.0.0.0"},
                                              "agents": {"enabled": True}}))
    assert "every host that can reach 0.0.0.0:8080" in exposed[0]
    assert "AGENT REGISTRATION IS ON WITHOUT AUTH" in exposed[1]
