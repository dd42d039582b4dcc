"""issue_token / inspect_token / parse_ttl and the ``token`` CLI commands."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from hub.auth.issue import TokenError, inspect_token, issue_token, parse_ttl
from hub.auth.keys import KeyRing
from hub.auth.principal import Principal, TokenExpired
from hub.auth.verifier import Verifier
from hub.cli.token import add_token_commands
from hub.config.schema import ConfigError
from tests.auth.conftest import (
    HS_ENV,
    HS_SECRET,
    NOW,
    Clock,
    KeyFiles,
    auth_cfg,
    hs_entry,
    pem_entry,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("3600", 3600), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000),
    ("2w", 1209600), (" 7d ", 604800),
])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "1y", "1.5h", "h", "99999d", "10 days"])
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(TokenError):
        parse_ttl(text)


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_round_trip(alg: str, hs_env: str, rsa_key: KeyFiles, ec_key: KeyFiles,
                    clock: Clock) -> None:
    entry = {"HS256": hs_entry("k"), "RS256": pem_entry("k", "RS256", rsa_key),
             "ES256": pem_entry("k", "ES256", ec_key)}[alg]
    cfg = auth_cfg(entry, audience="spokehub", issuer="ops")
    token = issue_token(cfg, tenant="acme", scopes=["infer", "admin"], ttl_s=600,
                        models=["llama", "qwen"], clock=clock)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == "k" and header["alg"] == alg
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] == claims["nbf"] == int(NOW) and claims["exp"] == int(NOW) + 600
    assert claims["aud"] == "spokehub" and claims["iss"] == "ops" and claims["jti"]
    v = Verifier(cfg, KeyRing.load(cfg), clock)
    assert v.verify(f"Bearer {token}") == Principal(
        sub="acme", tenant="acme", scopes=frozenset({"infer", "admin"}),
        models=frozenset({"llama", "qwen"}))
    clock.now = NOW + 600 + cfg.leeway_s
    with pytest.raises(TokenExpired):
        v.verify(f"Bearer {token}")


def test_issue_with_sub_and_kid(monkeypatch: pytest.MonkeyPatch, rsa_key: KeyFiles,
                                clock: Clock) -> None:
    monkeypatch.setenv(HS_ENV, HS_SECRET)
    cfg = auth_cfg(hs_entry("a"), pem_entry("b", "RS256", rsa_key))
    token = issue_token(cfg, tenant="t1", scopes=["agent"], ttl_s=60, sub="node-7", kid="b",
                        clock=clock)
    p = Verifier(cfg, KeyRing.load(cfg), clock).verify(f"Bearer {token}")
    assert (p.sub, p.tenant, p.scopes, p.models) == ("node-7", "t1", frozenset({"agent"}), None)
    with pytest.raises(ConfigError, match="several keys can sign"):
        issue_token(cfg, tenant="t1", scopes=["infer"], ttl_s=60)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scopes": ["root"]}, "unknown scope 'root'"),
    ({"scopes": []}, "at least one scope"),
    ({"tenant": ""}, "tenant must be"),
    ({"ttl_s": 0}, "ttl_s must be"),
    ({"models": []}, "models must be"),
    ({"sub": ""}, "sub must be"),
])
def test_issue_rejects_bad_arguments(hs_env: str, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"tenant": "t", "scopes": ["infer"], "ttl_s": 60, **kwargs}
    with pytest.raises(TokenError, match=match):
        issue_token(auth_cfg(hs_entry()), **args)


def test_inspect(hs_env: str, clock: Clock) -> None:
    cfg = auth_cfg(hs_entry())
    token = issue_token(cfg, tenant="acme", scopes=["infer"], ttl_s=120, clock=clock)
    report = inspect_token(cfg, token, clock=clock)
    assert report["valid"] is True and report["error"] is None
    assert report["claims"]["tenant"] == "acme" and report["header"]["kid"] == "hs1"
    assert report["expires_in_s"] == 120
    clock.now += 3600
    report = inspect_token(cfg, token, clock=clock)
    assert report["valid"] is False and report["error"].startswith("token_expired")
    assert report["expires_in_s"] < 0
    report = inspect_token(cfg, "not.a.token", clock=clock)
    assert report == {"valid": False, "error": "not a decodable JWT", "header": None,
                      "claims": None, "expires_in_s": None}


# -- CLI --------------------------------------------------------------------------

def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="spokehub")
    add_token_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    code: int = args.func(args)
    return code


def _config(tmp_path: Path, auth: dict[str, Any] | None) -> str:
    p = tmp_path / "hub.yaml"
    p.write_text(yaml.safe_dump({"listen": {"port": 8080}, "workers": [], "auth": auth}))
    return str(p)


def test_cli_issue_and_inspect(tmp_path: Path, hs_env: str, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, {"enabled": True, "keys": [hs_entry()]})
    assert _run(["token", "issue", "--config", path, "--tenant", "acme",
                 "--scope", "infer,admin", "--ttl", "1h", "--models", "a,b"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert out.err == "" and "\n" not in token and token.count(".") == 2
    claims = jwt.decode(token, HS_SECRET, algorithms=["HS256"])
    assert claims["scope"] == "admin infer" and claims["models"] == ["a", "b"]
    assert claims["exp"] - claims["iat"] == 3600

    assert _run(["token", "inspect", "--config", path, token]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["claims"]["tenant"] == "acme"

    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert _run(["token", "inspect", "-c", path, "-"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True

    assert _run(["token", "inspect", "--config", path, token[:-4] + "AAAA"]) == 1
    assert json.loads(capsys.readouterr().out)["valid"] is False


CliCase = tuple[dict[str, Any] | None, list[str], str]


@pytest.mark.parametrize("case", [
    ({"keys": [{"kid": "a", "alg": "HS256", "secret": "hunter2-hunter2"}]}, [],
     "auth.keys[0].secret: inline secrets are not allowed"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "UNSET_VAR_X"}]}, [],
     "environment variable UNSET_VAR_X is not set"),
    (None, [], "no key can sign"),
    ({"keys": [hs_entry()]}, ["--scope", "root"], "unknown scope 'root'"),
    ({"keys": [hs_entry()]}, ["--ttl", "forever"], "bad TTL 'forever'"),
])
def test_cli_errors_exit_2_without_traceback(
        tmp_path: Path, hs_env: str, capsys: pytest.CaptureFixture[str], case: CliCase) -> None:
    auth, argv_extra, message = case
    path = _config(tmp_path, auth)
    argv = ["token", "issue", "--config", path, "--tenant", "t", "--scope", "infer",
            *argv_extra]
    assert _run(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert message in out.err and "Traceback" not in out.err and "hunter2" not in out.err


def test_cli_missing_or_bad_config_file(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["token", "inspect", "--config", str(tmp_path / "nope.yaml"), "x"]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("auth: [unclosed")
    assert _run(["token", "issue", "--config", str(bad), "--tenant", "t",
                 "--scope", "infer"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    bad.write_text("- a list")
    assert _run(["token", "inspect", "--config", str(bad), "x"]) == 2
    assert "must be a mapping" in capsys.readouterr().err


def test_cli_issue_needs_required_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _run(["token", "issue", "--config", "x"])
    assert info.value.code == 2
    capsys.readouterr()
