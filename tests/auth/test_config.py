"""parse_auth: schema, defaults, and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from hub.auth.config import DEFAULT_PUBLIC_PATHS, AuthConfig, KeySpec, parse_auth
from hub.config.schema import ConfigError


def test_defaults() -> None:
    assert parse_auth(None) == AuthConfig()
    cfg = parse_auth({})
    assert cfg.enabled is False and cfg.leeway_s == 30.0 and cfg.cache_size == 10_000
    assert cfg.public_paths == DEFAULT_PUBLIC_PATHS and cfg.keys == ()


def test_full() -> None:
    cfg = parse_auth({
        "enabled": True, "audience": "hub", "issuer": "me", "leeway_s": 5,
        "public_paths": ["/healthz"], "cache_size": 0,
        "keys": [{"kid": "a", "alg": "HS512", "secret_file": "/run/s"},
                 {"kid": "b", "alg": "ES256", "public_key_file": "b.pem",
                  "private_key_file": "b.key"},
                 {"jwks_file": "idp.json"}]})
    assert cfg.audience == "hub" and cfg.issuer == "me" and cfg.leeway_s == 5.0
    assert cfg.public_paths == ("/healthz",) and cfg.cache_size == 0
    assert cfg.keys[0] == KeySpec(path="auth.keys[0]", kid="a", alg="HS512",
                                  secret_file="/run/s")
    assert cfg.keys[1].can_sign and not cfg.keys[1].symmetric
    assert cfg.keys[2].jwks_file == "idp.json" and cfg.keys[2].alg is None
    assert not cfg.keys[2].can_sign


@pytest.mark.parametrize(("raw", "message"), [
    ({"enabled": True}, "auth.keys: at least one key is required"),
    ({"enabled": "yes"}, "auth.enabled: must be true or false"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret": "hunter2"}]},
     "auth.keys[0].secret: inline secrets are not allowed"),
    ({"keys": [{"kid": "a", "alg": "RS256", "public_key": "---"}]},
     "auth.keys[0].public_key: inline keys are not allowed"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "X"},
               {"kid": "b", "alg": "XX1", "secret_env": "Y"}]},
     "auth.keys[1].alg: must be one of"),
    ({"keys": [{"kid": "a", "alg": "none", "secret_env": "X"}]}, "auth.keys[0].alg"),
    ({"keys": [{"kid": "a", "alg": "HS256"}]}, "auth.keys[0]: needs exactly one of"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "X", "secret_file": "f"}]},
     "got secret_env, secret_file"),
    ({"keys": [{"kid": "a", "alg": "RS256", "secret_env": "X"}]},
     "auth.keys[0].secret_env: only for HMAC keys"),
    ({"keys": [{"kid": "a", "alg": "HS256", "public_key_file": "p"}]},
     "auth.keys[0].public_key_file: an HS256 key is a shared secret"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "X", "private_key_file": "k"}]},
     "auth.keys[0].private_key_file: only allowed next to public_key_file"),
    ({"keys": [{"alg": "HS256", "secret_env": "X"}]}, "auth.keys[0].kid: is required"),
    ({"keys": [{"kid": "a b", "alg": "HS256", "secret_env": "X"}]}, "auth.keys[0].kid"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "NOT-A-NAME"}]},
     "auth.keys[0].secret_env: must be an environment variable name"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "X"},
               {"kid": "a", "alg": "HS256", "secret_env": "Y"}]},
     "auth.keys[1].kid: duplicate kid 'a'"),
    ({"keys": [{"kid": "a", "jwks_file": "j"}]}, "auth.keys[0].kid: a jwks_file entry"),
    ({"keys": [{"jwks_file": "j", "alg": "HS256"}]}, "auth.keys[0].jwks_file"),
    ({"keys": [{"kid": "a", "alg": "HS256", "secret_env": "X", "colour": "red"}]},
     "auth.keys[0].colour: unknown key"),
    ({"keys": ["HS256"]}, "auth.keys[0]: must be a mapping"),
    ({"keys": {"kid": "a"}}, "auth.keys: must be a list"),
    ({"leeway_s": -1}, "auth.leeway_s: must be >= 0"),
    ({"leeway_s": 7200}, "auth.leeway_s: must be <= 3600"),
    ({"cache_size": -5}, "auth.cache_size"),
    ({"public_paths": ["healthz"]}, "auth.public_paths[0]: must be a path"),
    ({"audience": ""}, "auth.audience: must be a non-empty string"),
    ({"typo": 1}, "auth.typo: unknown key"),
    ([], "auth: must be a mapping"),
])
def test_errors_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_auth(raw)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_custom_path_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^hub\.auth\.keys\[0\]\.secret:"):
        parse_auth({"keys": [{"kid": "a", "alg": "HS256", "secret": "x"}]}, path="hub.auth")
