"""A request's class: header, token claims, tenant setting; the config keys; the cost."""

from __future__ import annotations

import argparse
from pathlib import Path

import jwt
import pytest
import yaml

from hub.admission.limiter import parse_admission
from hub.admission.priority import (
    BATCH,
    INTERACTIVE,
    SHEDDABLE,
    InvalidPriority,
    PriorityNotAllowed,
    queue_cost,
    resolve,
)
from hub.auth.config import AuthConfig
from hub.auth.issue import TokenError, issue_token
from hub.auth.keys import KeyRing
from hub.auth.principal import InvalidToken, Principal
from hub.auth.verifier import Verifier
from hub.cli.token import add_token_commands
from hub.config.kit import ConfigError
from tests.auth.conftest import HS_SECRET, Clock, auth_cfg, hs_entry


def principal(priority: str | None = None,
              priorities: frozenset[str] | None = frozenset()) -> Principal:
    return Principal(sub="s", tenant="t", scopes=frozenset({"infer"}), models=None,
                     priority=priority, priorities=priorities)


@pytest.mark.parametrize(("header", "who", "default", "want"), [
    (None, principal(), INTERACTIVE, INTERACTIVE),  # nothing set
    (None, principal(), BATCH, BATCH),  # the tenant's setting
    (None, principal(SHEDDABLE), BATCH, SHEDDABLE),  # the token's claim wins
    ("", principal(BATCH), INTERACTIVE, BATCH),  # an empty header is no header
    ("batch", principal(), INTERACTIVE, BATCH),  # asking for less is always allowed
    (" Sheddable ", principal(BATCH), INTERACTIVE, SHEDDABLE),
    ("batch", principal(BATCH), INTERACTIVE, BATCH),  # its own class
    ("interactive", principal(BATCH, frozenset({INTERACTIVE})), INTERACTIVE, INTERACTIVE),
    ("interactive", principal(SHEDDABLE, None), SHEDDABLE, INTERACTIVE),  # auth off
])
def test_resolve(header: str | None, who: Principal, default: str, want: str) -> None:
    assert resolve(header, who, default) == want


def test_asking_for_a_higher_class_needs_the_claim() -> None:
    with pytest.raises(PriorityNotAllowed) as info:
        resolve("interactive", principal(BATCH), INTERACTIVE)
    assert info.value.status == 403 and info.value.code == "priority_not_allowed"
    with pytest.raises(PriorityNotAllowed):
        resolve("batch", principal(), SHEDDABLE)  # the tenant's class is sheddable
    with pytest.raises(PriorityNotAllowed):
        resolve("interactive", principal(SHEDDABLE, frozenset({BATCH})), INTERACTIVE)


@pytest.mark.parametrize("header", ["urgent", "0", "interactive,batch", "x" * 500])
def test_unknown_class_is_a_400(header: str) -> None:
    with pytest.raises(InvalidPriority) as info:
        resolve(header, principal(priorities=None), INTERACTIVE)
    assert info.value.status == 400 and info.value.code == "invalid_priority"
    assert len(info.value.message) < 200


def test_queue_cost_is_body_bytes_over_4_plus_completion() -> None:
    assert queue_cost(4000, 256) == 1256
    assert queue_cost(3, 0) == 1  # never free
    assert queue_cost(400, -1) == 100


def test_config_keys() -> None:
    cfg = parse_admission({
        "priority": "batch", "weight": 2, "batch_aging_s": 3.5,
        "worker_queue_max": 40, "worker_queue_sheddable_max": 8,
        "tenants": {"ui": {"priority": "interactive", "weight": 4},
                    "crawler": {"priority": "sheddable"}}})
    assert (cfg.default.priority, cfg.default.weight) == (BATCH, 2.0)
    assert (cfg.for_tenant("ui").priority, cfg.for_tenant("ui").weight) == (INTERACTIVE, 4.0)
    assert (cfg.for_tenant("crawler").priority, cfg.for_tenant("crawler").weight) == (
        SHEDDABLE, 2.0)
    assert cfg.batch_aging_s == 3.5 and cfg.worker_queue_sheddable_max == 8
    assert cfg.for_tenant("ui").unlimited  # class and weight are no rate limits
    d = parse_admission({"worker_queue_max": 31})
    assert d.worker_queue_sheddable_max == 15 and d.batch_aging_s == 10.0
    assert (d.default.priority, d.default.weight) == (INTERACTIVE, 1.0)


@pytest.mark.parametrize(("raw", "message"), [
    ({"priority": "urgent"}, "admission.priority: must be one of interactive, batch"),
    ({"tenants": {"a": {"priority": 1}}}, "admission.tenants.a.priority: must be a non-empty"),
    ({"tenants": {"a": {"weight": 0}}}, "admission.tenants.a.weight: must be > 0"),
    ({"tenants": {"a": {"weight": None}}}, "admission.tenants.a.weight: must not be null"),
    ({"batch_aging_s": 0}, "admission.batch_aging_s: must be > 0"),
    ({"worker_queue_sheddable_max": -1}, "admission.worker_queue_sheddable_max: must be"),
    ({"tenants": {"a": {"batch_aging_s": 1}}}, "admission.tenants.a.batch_aging_s: unknown"),
])
def test_config_errors_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_admission(raw)
    assert message in str(info.value)


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    monkeypatch.setenv("SPOKEHUB_TEST_HS_SECRET", HS_SECRET)
    return auth_cfg(hs_entry("k"))


def test_claims_round_trip(cfg: AuthConfig) -> None:
    clock = Clock()
    token = issue_token(cfg, tenant="acme", scopes=["infer"], ttl_s=600, priority=BATCH,
                        priorities=[SHEDDABLE, INTERACTIVE], clock=clock)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["priority"] == "batch" and claims["priorities"] == ["interactive",
                                                                      "sheddable"]
    p = Verifier(cfg, KeyRing.load(cfg), clock).verify(f"Bearer {token}")
    assert p.priority == BATCH and p.priorities == frozenset({INTERACTIVE, SHEDDABLE})
    plain = issue_token(cfg, tenant="acme", scopes=["infer"], ttl_s=600, clock=clock)
    p = Verifier(cfg, KeyRing.load(cfg), clock).verify(f"Bearer {plain}")
    assert p.priority is None and p.priorities == frozenset()
    with pytest.raises(TokenError, match="unknown priority 'urgent'"):
        issue_token(cfg, tenant="acme", scopes=["infer"], ttl_s=600, priority="urgent")
    with pytest.raises(TokenError, match="unknown priority"):
        issue_token(cfg, tenant="acme", scopes=["infer"], ttl_s=600, priorities=["x"])


@pytest.mark.parametrize("extra", [{"priority": "urgent"}, {"priority": 1},
                                   {"priorities": "batch"}, {"priorities": ["batch", "x"]}])
def test_bad_priority_claims_are_a_401(cfg: AuthConfig, extra: dict[str, object]) -> None:
    clock = Clock()
    claims: dict[str, object] = {"sub": "a", "exp": int(clock()) + 60, **extra}
    token = jwt.encode(claims, HS_SECRET, algorithm="HS256", headers={"kid": "k"})
    with pytest.raises(InvalidToken, match="priorit"):
        Verifier(cfg, KeyRing.load(cfg), clock).verify(f"Bearer {token}")


def test_cli_issue_priority(tmp_path: Path, cfg: AuthConfig,
                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"auth": {"enabled": True, "keys": [hs_entry("k")]}}))
    ap = argparse.ArgumentParser(prog="spokehub")
    add_token_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["token", "issue", "-c", str(path), "--tenant", "acme", "--scope",
                          "infer", "--priority", "batch", "--allow-priority",
                          "batch,sheddable", "--allow-priority", "interactive"])
    assert args.func(args) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), HS_SECRET, algorithms=["HS256"])
    assert claims["priority"] == "batch"
    assert claims["priorities"] == ["interactive", "batch", "sheddable"]
    args = ap.parse_args(["token", "issue", "-c", str(path), "--tenant", "acme", "--scope",
                          "infer", "--allow-priority", "urgent"])
    assert args.func(args) == 2
    assert "unknown priority 'urgent'" in capsys.readouterr().err
