"""KeyRing: loading secrets, PEM files and JWK Sets, pinned algorithms, kid lookup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.auth.config import parse_auth
from hub.auth.keys import KeyRing, RingKey, fingerprint, load_signing_key
from hub.auth.principal import InvalidToken
from hub.config.schema import ConfigError
from tests.auth.conftest import HS_ENV, HS_SECRET, KeyFiles, auth_cfg, hs_entry, pem_entry


def load_err(raw_keys: list[dict[str, Any]], environ: dict[str, str] | None = None) -> str:
    cfg = parse_auth({"keys": raw_keys})
    with pytest.raises(ConfigError) as info:
        KeyRing.load(cfg, environ or {})
    return str(info.value)


def test_hs_secret_from_env_and_file(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"s" * 48 + b"\n")
    cfg = auth_cfg(hs_entry(), {"kid": "f", "alg": "HS384", "secret_file": str(f)})
    ring = KeyRing.load(cfg, {HS_ENV: HS_SECRET})
    assert len(ring) == 2 and set(ring.kids) == {"hs1", "f"}
    entry = ring.get("f")
    assert entry is not None and entry.key == b"s" * 48 and entry.alg == "HS384"
    assert HS_SECRET not in repr(ring.get("hs1"))


@pytest.mark.parametrize(("alg", "size"), [("HS256", 31), ("HS384", 47), ("HS512", 63)])
def test_short_hs_secret_rejected(alg: str, size: int) -> None:
    msg = load_err([{"kid": "a", "alg": alg, "secret_env": "S"}], {"S": "x" * size})
    assert msg.startswith("auth.keys[0].secret_env:") and f"got {size}" in msg


def test_missing_env_and_file() -> None:
    assert "environment variable NOPE is not set" in load_err(
        [{"kid": "a", "alg": "HS256", "secret_env": "NOPE"}])
    assert load_err([{"kid": "a", "alg": "HS256", "secret_file": "/nonexistent/s"}]
                    ).startswith("auth.keys[0].secret_file: cannot read")


def test_pem_problems(tmp_path: Path, rsa_key: KeyFiles, ec_key: KeyFiles) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    assert "is not a PEM public key" in load_err(
        [{"kid": "a", "alg": "RS256", "public_key_file": str(junk)}])
    assert "holds a private key" in load_err(
        [{"kid": "a", "alg": "RS256", "public_key_file": str(rsa_key.private_path)}])
    assert "RS256 needs an RSA key" in load_err(
        [{"kid": "a", "alg": "RS256", "public_key_file": str(ec_key.public_path)}])
    assert "ES384 needs an EC key on curve secp384r1" in load_err(
        [{"kid": "a", "alg": "ES384", "public_key_file": str(ec_key.public_path)}])
    assert "ES256 needs an EC key" in load_err(
        [{"kid": "a", "alg": "ES256", "public_key_file": str(rsa_key.public_path)}])
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    p = tmp_path / "small.pem"
    p.write_bytes(small.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "1024 bits; at least 2048" in load_err(
        [{"kid": "a", "alg": "RS256", "public_key_file": str(p)}])


def _jwk(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, **extra: Any) -> dict[str, Any]:
    algo: Any = (jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPublicKey)
                 else jwt.algorithms.ECAlgorithm)
    jwk: dict[str, Any] = algo.to_jwk(key, as_dict=True)
    jwk.update(extra)
    return {k: v for k, v in jwk.items() if v is not None}


def _pub(files: KeyFiles) -> Any:
    return serialization.load_pem_public_key(files.public_pem)


def _write_jwks(tmp_path: Path, keys: list[dict[str, Any]], name: str = "set.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps({"keys": keys}))
    return str(p)


def test_jwks_loads_and_verifies(tmp_path: Path, rsa_key: KeyFiles, ec_key: KeyFiles) -> None:
    path = _write_jwks(tmp_path, [_jwk(_pub(rsa_key), kid="r", alg="RS256", use="sig"),
                                  _jwk(_pub(ec_key), kid="e", alg="ES256")])
    ring = KeyRing.load(auth_cfg({"jwks_file": path}))
    assert set(ring.kids) == {"r", "e"}
    priv = serialization.load_pem_private_key(ec_key.private_pem, password=None)
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    token = jwt.encode({"sub": "x"}, priv, algorithm="ES256", headers={"kid": "e"})
    key, alg = ring.for_token(jwt.get_unverified_header(token))
    assert alg == "ES256"
    assert jwt.decode(token, key, algorithms=[alg]) == {"sub": "x"}


def test_jwks_entry_alg_fills_in(tmp_path: Path, rsa_key: KeyFiles) -> None:
    path = _write_jwks(tmp_path, [_jwk(_pub(rsa_key), kid="r")])
    ring = KeyRing.load(auth_cfg({"jwks_file": path, "alg": "PS256"}))
    entry = ring.get("r")
    assert entry is not None and entry.alg == "PS256"


def test_jwks_problems(tmp_path: Path, rsa_key: KeyFiles, ec_key: KeyFiles) -> None:
    rsa_pub, ec_pub = _pub(rsa_key), _pub(ec_key)

    def err(keys: list[dict[str, Any]], alg: str | None = None) -> str:
        entry: dict[str, Any] = {"jwks_file": _write_jwks(tmp_path, keys)}
        if alg:
            entry["alg"] = alg
        return load_err([entry])

    assert "keys[0]: needs an 'alg'" in err([_jwk(rsa_pub, kid="r")])
    assert "keys[0]: needs a 'kid'" in err([_jwk(rsa_pub, alg="RS256")])
    assert "differs from auth.keys[0].alg" in err([_jwk(rsa_pub, kid="r", alg="RS256")],
                                                  alg="RS512")
    assert "symmetric keys do not belong" in err([{"kty": "oct", "k": "AAAA", "kid": "s",
                                                   "alg": "HS256"}])
    priv = serialization.load_pem_private_key(ec_key.private_pem, password=None)
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(priv))
    assert "holds private key material" in err([{**private_jwk, "kid": "p", "alg": "ES256"}])
    assert "keys[1]: 'use' must be 'sig'" in err([_jwk(rsa_pub, kid="a", alg="RS256"),
                                                  _jwk(rsa_pub, kid="b", alg="RS256",
                                                       use="enc")])
    assert "keys[0]: unusable key" in err([_jwk(ec_pub, kid="e", alg="RS256")])
    assert "keys[1]: unusable key" in err([_jwk(rsa_pub, kid="a", alg="RS256"),
                                           {"kty": "RSA", "kid": "b", "alg": "RS256",
                                            "n": "!!", "e": "AQAB"}])
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert "is not valid JSON" in load_err([{"jwks_file": str(bad)}])
    bad.write_text('{"keys": []}')
    assert "expected a JWK Set" in load_err([{"jwks_file": str(bad)}])


def test_duplicate_kid_across_sources(tmp_path: Path, rsa_key: KeyFiles) -> None:
    path = _write_jwks(tmp_path, [_jwk(_pub(rsa_key), kid="rs1", alg="RS256")])
    cfg = auth_cfg(pem_entry("rs1", "RS256", rsa_key), {"jwks_file": path})
    with pytest.raises(ConfigError, match="duplicate kid 'rs1'"):
        KeyRing.load(cfg)


def test_for_token_selection() -> None:
    one = KeyRing([RingKey("a", "HS256", b"x" * 32)])
    assert one.for_token({"alg": "HS256"}) == (b"x" * 32, "HS256")
    assert one.for_token({"alg": "HS256", "kid": "a"})[1] == "HS256"
    for header in ({"alg": "HS256", "kid": "b"}, {"alg": "RS256"}, {"alg": "none"},
                   {"alg": "HS256", "kid": ["a"]}, {}):
        with pytest.raises(InvalidToken):
            one.for_token(header)
    two = KeyRing([RingKey("a", "HS256", b"x" * 32), RingKey("b", "HS512", b"y" * 64)])
    with pytest.raises(InvalidToken, match="names no signing key"):
        two.for_token({"alg": "HS256"})
    assert two.for_token({"alg": "HS512", "kid": "b"}) == (b"y" * 64, "HS512")


def test_signing_key_selection(monkeypatch: pytest.MonkeyPatch, rsa_key: KeyFiles,
                               rsa_key2: KeyFiles, ec_key: KeyFiles) -> None:
    monkeypatch.setenv(HS_ENV, HS_SECRET)
    cfg = auth_cfg(hs_entry(), pem_entry("rs1", "RS256", rsa_key),
                   pem_entry("ec-verify-only", "ES256", ec_key, sign=False))
    with pytest.raises(ConfigError, match="several keys can sign"):
        load_signing_key(cfg)
    spec, key = load_signing_key(cfg, "hs1")
    assert spec.alg == "HS256" and key == HS_SECRET.encode()
    spec, key = load_signing_key(cfg, "rs1")
    assert isinstance(key, rsa.RSAPrivateKey)
    with pytest.raises(ConfigError, match="cannot sign"):
        load_signing_key(cfg, "ec-verify-only")
    with pytest.raises(ConfigError, match="no key with kid"):
        load_signing_key(cfg, "zzz")
    mismatched = auth_cfg({"kid": "m", "alg": "RS256",
                           "public_key_file": str(rsa_key.public_path),
                           "private_key_file": str(rsa_key2.private_path)})
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\]\.private_key_file: does not match"):
        load_signing_key(mismatched)
    verify_only = auth_cfg(pem_entry("v", "ES256", ec_key, sign=False))
    with pytest.raises(ConfigError, match="no key can sign"):
        load_signing_key(verify_only)


def test_fingerprint_is_stable_and_not_the_key(rsa_key: KeyFiles) -> None:
    fp = fingerprint(b"x" * 32)
    assert fp == fingerprint(b"x" * 32) and len(fp) == 16 and "x" not in fp
    assert len(fingerprint(_pub(rsa_key))) == 16
