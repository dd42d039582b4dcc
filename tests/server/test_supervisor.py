"""The supervisor's decisions: how many processes, which port, when to restart."""

from __future__ import annotations

import socket

import pytest

from hub.config.schema import ConfigError, parse_config
from hub.server.supervisor import (
    RestartPolicy,
    check_bindable,
    check_listen,
    child_ports,
    parse_processes,
)
from hub.state.config import BACKEND_OVERRIDE_ENV, parse_state


def test_processes_count_or_auto() -> None:
    assert parse_processes("1") == 1
    assert parse_processes(" 4 ") == 4
    assert parse_processes("auto", cores=lambda: 2) == 2
    assert parse_processes("AUTO", cores=lambda: 500) == 64
    for bad in ("0", "-1", "65", "two", ""):
        with pytest.raises(ValueError, match="--processes"):
            parse_processes(bad)


def test_port_0_cannot_be_shared() -> None:
    config = parse_config({"listen": {"host": "127.0.0.1", "port": 0}})
    check_listen(config, 1)
    with pytest.raises(ConfigError, match=r"listen\.port: 0 .*--processes 2"):
        check_listen(config, 2)
    check_listen(parse_config({"listen": {"host": "127.0.0.1", "port": 8080}}), 2)


def test_restart_backoff_grows_per_slot_and_is_forgiven_after_a_stable_run() -> None:
    policy = RestartPolicy(base_s=0.5, cap_s=4.0, stable_s=60.0)
    assert [policy.delay(0, ran_s=1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(1, ran_s=1.0) == 0.5  # another slot has its own count
    assert policy.delay(0, ran_s=120.0) == 0.5  # ran a while: a fresh failure
    assert RestartPolicy.fatal(2) and not RestartPolicy.fatal(1) and not RestartPolicy.fatal(-9)


def test_child_ports() -> None:
    assert child_ports(None, 3) == ()
    assert child_ports(9100, 0) == (9100,)
    assert child_ports(9100, 3) == (9103,)


def test_backend_override_for_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_OVERRIDE_ENV, "redis")
    assert parse_state({"backend": "memory"}).backend == "redis"
    monkeypatch.setenv(BACKEND_OVERRIDE_ENV, "bogus")
    with pytest.raises(ConfigError, match=BACKEND_OVERRIDE_ENV):
        parse_state(None)
    monkeypatch.delenv(BACKEND_OVERRIDE_ENV)
    assert parse_state(None).backend == "memory"


def test_a_port_held_without_reuse_port_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"listen: cannot bind 127\.0\.0\.1:{port}"):
            check_bindable("127.0.0.1", port)
    check_bindable("127.0.0.1", port)  # free again
