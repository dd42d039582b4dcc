"""Keys, configs and a settable clock for the auth tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.auth.config import AuthConfig, parse_auth

NOW = 1_700_000_000.0
HS_SECRET = "k" * 40
HS_ENV = "SPOKEHUB_TEST_HS_SECRET"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class KeyFiles:
    private_pem: bytes
    public_pem: bytes
    private_path: Path
    public_path: Path


def _write(tmp: Path, name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
           ) -> KeyFiles:
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp / f"{name}.pem").write_bytes(priv)
    (tmp / f"{name}.pub.pem").write_bytes(pub)
    return KeyFiles(priv, pub, tmp / f"{name}.pem", tmp / f"{name}.pub.pem")


@pytest.fixture(scope="session")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def rsa_key(keydir: Path) -> KeyFiles:
    return _write(keydir, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def rsa_key2(keydir: Path) -> KeyFiles:
    return _write(keydir, "rsa2", rsa.generate_private_key(public_exponent=65537,
                                                           key_size=2048))


@pytest.fixture(scope="session")
def ec_key(keydir: Path) -> KeyFiles:
    return _write(keydir, "ec", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def hs_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(HS_ENV, HS_SECRET)
    return HS_SECRET


@pytest.fixture
def clock() -> Clock:
    return Clock()


def hs_entry(kid: str = "hs1", alg: str = "HS256", env: str = HS_ENV) -> dict[str, Any]:
    return {"kid": kid, "alg": alg, "secret_env": env}


def pem_entry(kid: str, alg: str, files: KeyFiles, *, sign: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"kid": kid, "alg": alg, "public_key_file": str(files.public_path)}
    if sign:
        entry["private_key_file"] = str(files.private_path)
    return entry


def auth_cfg(*keys: dict[str, Any], **extra: Any) -> AuthConfig:
    return parse_auth({"enabled": True, "keys": list(keys), **extra})
