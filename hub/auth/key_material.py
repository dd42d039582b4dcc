"""Key material: read secrets, PEM files and JWK Sets from config, and check each key.

Every key is checked against the one algorithm it is pinned to (type, RSA size, EC
curve, HMAC length) when it is read, so a bad key fails at start or reload with an
error naming the config key, never at request time. :mod:`hub.auth.keys` builds the
ring from what this module reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from hub.auth.config import (
    ASYMMETRIC_ALGS,
    EC_ALGS,
    HMAC_ALGS,
    RSA_ALGS,
    AuthConfig,
    KeySpec,
)
from hub.config.kit import ConfigError

PublicKey: TypeAlias = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                        | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
PrivateKey: TypeAlias = (rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                         | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
VerifyKey: TypeAlias = bytes | PublicKey
SignKey: TypeAlias = bytes | PrivateKey

MIN_RSA_BITS = 2048
_HMAC_MIN = {"HS256": 32, "HS384": 48, "HS512": 64}
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_MAX_KEY_FILE = 1 << 20


@dataclass(frozen=True, slots=True)
class RingKey:
    kid: str
    alg: str
    key: VerifyKey = field(repr=False)
    source: str = ""  # config path it came from, for logs


def load_ring_keys(cfg: AuthConfig,
                   environ: Mapping[str, str] | None = None) -> list[RingKey]:
    """Read every configured verification key; problems raise ConfigError naming the key."""
    env = os.environ if environ is None else environ
    keys: list[RingKey] = []
    for spec in cfg.keys:
        if spec.jwks_file is not None:
            keys.extend(_load_jwks(spec))
        elif spec.alg in HMAC_ALGS:
            assert spec.kid is not None
            keys.append(RingKey(spec.kid, spec.alg, _load_secret(spec, env), spec.path))
        else:
            assert spec.kid is not None and spec.alg is not None
            assert spec.public_key_file is not None
            pub = _load_public_pem(spec.public_key_file, f"{spec.path}.public_key_file")
            _check_public(pub, spec.alg, f"{spec.path}.public_key_file")
            keys.append(RingKey(spec.kid, spec.alg, pub, spec.path))
    return keys


def load_signing_key(cfg: AuthConfig, kid: str | None = None,
                     environ: Mapping[str, str] | None = None) -> tuple[KeySpec, SignKey]:
    """The configured key to sign new tokens with: the HMAC secret or the PEM
    ``private_key_file``. With ``kid`` None there must be exactly one candidate."""
    env = os.environ if environ is None else environ
    where = "auth.keys"
    if kid is not None:
        matches = [k for k in cfg.keys if k.kid == kid]
        if not matches:
            raise ConfigError(f"{where}: no key with kid {kid!r}")
        spec = matches[0]
        if not spec.can_sign:
            raise ConfigError(f"{spec.path}: kid {kid!r} cannot sign tokens "
                              f"(an {spec.alg} key needs private_key_file)")
    else:
        signers = [k for k in cfg.keys if k.can_sign]
        if not signers:
            raise ConfigError(f"{where}: no key can sign tokens (configure an HMAC "
                              f"secret or a private_key_file)")
        if len(signers) > 1:
            kids = ", ".join(repr(k.kid) for k in signers)
            raise ConfigError(f"{where}: several keys can sign ({kids}); choose one by kid")
        spec = signers[0]
    assert spec.alg is not None
    if spec.alg in HMAC_ALGS:
        return spec, _load_secret(spec, env)
    assert spec.private_key_file is not None and spec.public_key_file is not None
    where = f"{spec.path}.private_key_file"
    priv = _load_private_pem(spec.private_key_file, where)
    _check_public(priv.public_key(), spec.alg, where)
    pub = _load_public_pem(spec.public_key_file, f"{spec.path}.public_key_file")
    if spki(priv.public_key()) != spki(pub):
        raise ConfigError(f"{where}: does not match public_key_file")
    return spec, priv


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: str, where: str) -> bytes:
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"{where}: {path} is larger than {_MAX_KEY_FILE} bytes")
    return data


def _load_secret(spec: KeySpec, env: Mapping[str, str]) -> bytes:
    assert spec.alg is not None
    if spec.secret_env is not None:
        where = f"{spec.path}.secret_env"
        value = env.get(spec.secret_env)
        if not value:
            raise ConfigError(f"{where}: environment variable {spec.secret_env} "
                              f"is not set or empty")
        secret = value.encode()
    else:
        assert spec.secret_file is not None
        where = f"{spec.path}.secret_file"
        secret = _read(spec.secret_file, where).rstrip(b"\r\n")
    need = _HMAC_MIN[spec.alg]
    if len(secret) < need:
        raise ConfigError(f"{where}: an {spec.alg} secret must be at least {need} bytes, "
                          f"got {len(secret)}")
    return secret


def _load_public_pem(path: str, where: str) -> PublicKey:
    data = _read(path, where)
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{where}: {path} holds a private key; give the public key "
                          f"(private_key_file is only for signing)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: {path} is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                      | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise ConfigError(f"{where}: {path}: unsupported key type")
    return key


def _load_private_pem(path: str, where: str) -> PrivateKey:
    data = _read(path, where)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{where}: {path} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: {path} is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise ConfigError(f"{where}: {path}: unsupported key type")
    return key


def _check_public(key: object, alg: str, where: str) -> None:
    """The key type (and size / curve) must be the one ``alg`` is defined for."""
    if alg in RSA_ALGS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError(f"{where}: {alg} needs an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: RSA key is {key.key_size} bits; "
                              f"at least {MIN_RSA_BITS} required")
    elif alg in EC_ALGS:
        curve = _EC_CURVES[alg]
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
            raise ConfigError(f"{where}: {alg} needs an EC key on curve {curve.name}")
    elif alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise ConfigError(f"{where}: EdDSA needs an Ed25519 or Ed448 key")
    else:
        raise ConfigError(f"{where}: {alg} is not a public-key algorithm")


def _load_jwks(spec: KeySpec) -> list[RingKey]:
    assert spec.jwks_file is not None
    where = f"{spec.path}.jwks_file"
    try:
        doc = json.loads(_read(spec.jwks_file, where))
    except (ValueError, RecursionError):
        raise ConfigError(f"{where}: {spec.jwks_file} is not valid JSON") from None
    raw = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a JWK Set: {{\"keys\": [...]}} with keys")
    jwks: list[dict[str, Any]] = []
    for i, jwk in enumerate(raw):
        at = f"{where} keys[{i}]"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{at}: must be a JSON object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"{at}: needs a 'kid'")
        if jwk.get("kty") == "oct":
            raise ConfigError(f"{at}: symmetric keys do not belong in a JWK Set; "
                              f"use secret_env or secret_file")
        if any(p in jwk for p in ("d", "p", "q")):
            raise ConfigError(f"{at}: holds private key material; publish public keys only")
        if jwk.get("use", "sig") != "sig":
            raise ConfigError(f"{at}: 'use' must be 'sig'")
        alg = jwk.get("alg")
        if alg is None:
            alg = spec.alg
        if alg is None:
            raise ConfigError(f"{at}: needs an 'alg' (or set alg on {spec.path})")
        if spec.alg is not None and alg != spec.alg:
            raise ConfigError(f"{at}: alg {alg!r} differs from {spec.path}.alg {spec.alg!r}")
        if alg not in ASYMMETRIC_ALGS:
            raise ConfigError(f"{at}: unsupported alg {alg!r}")
        jwks.append({**jwk, "alg": alg})
    try:
        keyset: jwt.PyJWKSet | None = jwt.PyJWKSet(jwks)
    except jwt.PyJWTError:
        keyset = None
    if keyset is None or len(keyset.keys) != len(jwks):
        # PyJWKSet skips the keys it cannot use; name the first one.
        for i, jwk in enumerate(jwks):
            try:
                jwt.PyJWK(jwk)
            except jwt.PyJWTError as exc:
                raise ConfigError(f"{where} keys[{i}]: unusable key: {exc}") from None
        raise ConfigError(f"{where}: unusable JWK Set")
    out: list[RingKey] = []
    for i, k in enumerate(keyset.keys):
        at = f"{where} keys[{i}]"
        _check_public(k.key, k.algorithm_name, at)
        assert k.key_id is not None  # checked above
        out.append(RingKey(k.key_id, k.algorithm_name, k.key, at))
    return out
