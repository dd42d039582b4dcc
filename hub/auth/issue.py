"""Mint and inspect tokens with the keys of an ``auth:`` config (the ``token`` CLI)."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from hub.admission.priority import CLASSES
from hub.auth.config import AuthConfig
from hub.auth.keys import KeyRing, load_signing_key
from hub.auth.principal import SCOPES
from hub.auth.verifier import Verifier
from hub.errors import HubError

MAX_TTL_S = 3650 * 86400
_TTL_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TokenError(ValueError):
    """A bad argument to issue_token / parse_ttl."""


def parse_ttl(text: str) -> int:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"2w"`` or plain seconds ``"3600"``."""
    m = _TTL_RE.match(text)
    if not m:
        raise TokenError(f"bad TTL {text!r}: use e.g. 3600, 15m, 12h, 30d")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise TokenError(f"bad TTL {text!r}: must be between 1 second and 3650 days")
    return seconds


def issue_token(cfg: AuthConfig, *, tenant: str, scopes: list[str], ttl_s: int,
                sub: str | None = None, models: list[str] | None = None,
                kid: str | None = None, priority: str | None = None,
                priorities: list[str] | None = None, clock: Callable[[], float] = time.time,
                environ: Mapping[str, str] | None = None) -> str:
    """A signed JWT for ``tenant``. Raises TokenError for bad arguments and
    ConfigError when no configured key can sign."""
    if not tenant or len(tenant) > 128:
        raise TokenError("tenant must be 1-128 characters")
    if sub is not None and (not sub or len(sub) > 256):
        raise TokenError("sub must be 1-256 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise TokenError(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    if not scopes:
        raise TokenError(f"at least one scope is required ({', '.join(SCOPES)})")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 0 < ttl_s <= MAX_TTL_S:
        raise TokenError("ttl_s must be a positive number of seconds (at most 3650 days)")
    if models is not None and (not models or not all(isinstance(m, str) and m
                                                     for m in models)):
        raise TokenError("models must be a non-empty list of model names")
    for klass in ([priority] if priority is not None else []) + (priorities or []):
        if klass not in CLASSES:
            raise TokenError(f"unknown priority {klass!r}: choose from {', '.join(CLASSES)}")
    spec, key = load_signing_key(cfg, kid, environ)
    assert spec.alg is not None
    now = int(clock())
    claims: dict[str, Any] = {"sub": sub or tenant, "tenant": tenant,
                              "scope": " ".join(sorted(set(scopes))),
                              "iat": now, "nbf": now, "exp": now + ttl_s,
                              "jti": os.urandom(12).hex()}
    if models is not None:
        claims["models"] = sorted(set(models))
    if priority is not None:
        claims["priority"] = priority
    if priorities:
        claims["priorities"] = [c for c in CLASSES if c in priorities]
    if cfg.audience is not None:
        claims["aud"] = cfg.audience
    if cfg.issuer is not None:
        claims["iss"] = cfg.issuer
    return jwt.encode(claims, key, algorithm=spec.alg, headers={"kid": spec.kid})


def inspect_token(cfg: AuthConfig, token: str, *, clock: Callable[[], float] = time.time,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The token's header and claims (unverified, for display) plus whether the
    hub would accept it: ``{"valid", "error", "header", "claims", "expires_in_s"}``."""
    token = token.strip()
    out: dict[str, Any] = {"valid": False, "error": None, "header": None, "claims": None,
                           "expires_in_s": None}
    try:
        out["header"] = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        out["claims"] = claims
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
            out["expires_in_s"] = round(exp - clock())
    except Exception:
        out["error"] = "not a decodable JWT"
        return out
    verifier = Verifier(cfg, KeyRing.load(cfg, environ), clock)
    try:
        verifier.verify(f"Bearer {token}")
    except HubError as exc:
        out["error"] = f"{exc.code}: {exc.message}"
    else:
        out["valid"] = True
    return out
