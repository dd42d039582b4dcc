"""Verification keys, loaded once from the ``auth.keys`` config into a :class:`KeyRing`.

A ring is immutable: on config reload (or key rotation) build a new ring and a
new :class:`hub.auth.verifier.Verifier`. Every key is pinned to exactly one
algorithm, so a token can never pick how its own signature is checked (no
``alg: none``, no HS256 token "signed" with an RSA public key). Reading and checking
the key material itself is :mod:`hub.auth.key_material`'s job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from hub.auth.config import ALGORITHMS, AuthConfig
from hub.auth.key_material import RingKey, VerifyKey, load_ring_keys, load_signing_key, spki
from hub.auth.principal import InvalidToken
from hub.config.kit import ConfigError

__all__ = ["KeyRing", "RingKey", "VerifyKey", "fingerprint", "load_signing_key"]


class KeyRing:
    """kid -> (algorithm, verification key). Immutable once built."""

    __slots__ = ("_by_kid", "_only")

    def __init__(self, keys: Iterable[RingKey]) -> None:
        by_kid: dict[str, RingKey] = {}
        for k in keys:
            if k.alg not in ALGORITHMS:
                raise ValueError(f"{k.source}: unsupported algorithm {k.alg!r}")
            if k.kid in by_kid:
                raise ConfigError(f"{k.source}: duplicate kid {k.kid!r} "
                                  f"(also in {by_kid[k.kid].source})")
            by_kid[k.kid] = k
        self._by_kid: Mapping[str, RingKey] = MappingProxyType(by_kid)
        self._only = next(iter(by_kid.values())) if len(by_kid) == 1 else None

    @classmethod
    def load(cls, cfg: AuthConfig, environ: Mapping[str, str] | None = None) -> KeyRing:
        """Read every configured key; problems raise ConfigError naming the key."""
        return cls(load_ring_keys(cfg, environ))

    def __len__(self) -> int:
        return len(self._by_kid)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._by_kid)

    def get(self, kid: str) -> RingKey | None:
        return self._by_kid.get(kid)

    def for_token(self, header: Mapping[str, Any]) -> tuple[VerifyKey, str]:
        """The key and the single algorithm a token with this (unverified) header
        must be checked with. Unknown or missing kid -> 401."""
        kid = header.get("kid")
        entry: RingKey | None
        if kid is None:
            entry = self._only
            if entry is None:
                raise InvalidToken("Invalid bearer token: it names no signing key (kid)")
        elif not isinstance(kid, str):
            raise InvalidToken("Invalid bearer token: malformed 'kid' header")
        else:
            entry = self._by_kid.get(kid)
            if entry is None:
                raise InvalidToken("Invalid bearer token: signed with an unknown key")
        if header.get("alg") != entry.alg:
            raise InvalidToken("Invalid bearer token: algorithm does not match its key")
        return entry.key, entry.alg


def fingerprint(key: VerifyKey) -> str:
    """Short, non-reversible id of a key for logs (never log the key itself)."""
    raw = key if isinstance(key, bytes) else spki(key)
    return hashlib.sha256(raw).hexdigest()[:16]
