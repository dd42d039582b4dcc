"""Turn an ``Authorization`` header into a :class:`Principal`, or a 401.

Only ``Bearer <JWT>`` is accepted. Each token is checked against the one key its
``kid`` names, with that key's single algorithm; ``exp`` and ``sub`` are required;
``exp``/``nbf``/``iat`` are judged by the injected clock (with ``leeway_s``);
``aud``/``iss`` are checked when configured. Anything malformed, from a bad
header to a token pyjwt chokes on, is a 401 -- never a 500.

Claims: ``sub`` (required), ``tenant`` (defaults to ``sub``), ``scope`` (a
space- or comma-separated string, or a list; ``scp`` is read when ``scope`` is
absent), ``models`` (optional list of allowed model names; absent = all), ``priority`` (the
class of the token's requests in the worker queue) and ``priorities`` (the classes it
may ask for with the ``X-Spokehub-Priority`` header; see hub.admission.priority).

Verified tokens are remembered in a bounded LRU keyed by the token string until
the token expires (exp + leeway), so a repeat request costs one dict lookup and a
float compare instead of a signature check. Key rotation builds a new Verifier,
which starts with an empty cache.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jwt
from jwt.types import Options

from hub.admission.priority import CLASSES
from hub.auth.config import AuthConfig
from hub.auth.keys import KeyRing
from hub.auth.principal import (
    InvalidToken,
    MissingToken,
    Principal,
    TokenExpired,
    TokenNotYetValid,
)
from hub.errors import HubError

MAX_TOKEN_CHARS = 8192
_MAX_SUB = 256
_MAX_TENANT = 128
_JWS_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SCOPE_SPLIT = re.compile(r"[\s,]+")
_BAD = "Invalid bearer token"


def _num(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"{_BAD}: '{name}' must be a number")
    try:
        out = float(value)  # an int beyond float range raises OverflowError
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise InvalidToken(f"{_BAD}: '{name}' is out of range")
    return out


def _scopes(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(s for s in _SCOPE_SPLIT.split(value) if s)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return frozenset(s for s in value if s)
    raise InvalidToken(f"{_BAD}: 'scope' must be a string or a list of strings")


def _models(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(m, str) and m for m in value):
        return frozenset(value)
    raise InvalidToken(f"{_BAD}: 'models' must be a list of model names")


def _priority(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in CLASSES:
        return value
    raise InvalidToken(f"{_BAD}: 'priority' must be one of {', '.join(CLASSES)}")


def _priorities(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, list) and all(isinstance(c, str) and c in CLASSES for c in value):
        return frozenset(value)
    raise InvalidToken(f"{_BAD}: 'priorities' must be a list of {', '.join(CLASSES)}")


def _name(value: object, claim: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidToken(f"{_BAD}: '{claim}' must be a string of 1-{limit} characters")
    return value


class Verifier:
    __slots__ = ("_aud", "_cache", "_cache_size", "_clock", "_iss", "_leeway",
                 "_max_chars", "_options", "_ring")

    def __init__(self, cfg: AuthConfig, ring: KeyRing,
                 clock: Callable[[], float] = time.time, *,
                 max_token_chars: int = MAX_TOKEN_CHARS) -> None:
        self._ring = ring
        self._clock = clock
        self._aud = cfg.audience
        self._iss = cfg.issuer
        self._leeway = cfg.leeway_s
        self._cache_size = cfg.cache_size
        self._max_chars = max_token_chars
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        # Time claims are checked below against our clock, not by pyjwt.
        self._options: Options = {"require": ["exp", "sub"], "verify_exp": False,
                                  "verify_nbf": False, "verify_iat": False,
                                  "enforce_minimum_key_length": True}

    @property
    def cached(self) -> int:
        return len(self._cache)

    def verify(self, authorization_header: str | None) -> Principal:
        header = authorization_header
        if header is None or header == "":
            raise MissingToken("Missing API key: send 'Authorization: Bearer <token>'")
        if not isinstance(header, str):
            raise InvalidToken(f"{_BAD}: malformed Authorization header")
        if len(header) > self._max_chars + 16:
            raise InvalidToken(f"{_BAD}: longer than {self._max_chars} characters")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise InvalidToken("Unsupported Authorization scheme: use 'Bearer <token>'")
        token = token.strip()
        if not token:
            raise MissingToken("Missing API key: the Bearer token is empty")
        if len(token) > self._max_chars:
            raise InvalidToken(f"{_BAD}: longer than {self._max_chars} characters")
        now = self._clock()
        cache = self._cache
        hit = cache.get(token)
        if hit is not None:
            if now < hit[1]:
                cache.move_to_end(token)
                return hit[0]
            del cache[token]
        principal, until = self._verify(token, now)
        if self._cache_size:
            cache[token] = (principal, until)
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        if not _JWS_RE.fullmatch(token):
            raise InvalidToken(f"{_BAD}: not a signed JWT")
        try:
            key, alg = self._ring.for_token(jwt.get_unverified_header(token))
            claims = jwt.decode(token, key, algorithms=[alg], options=self._options,
                                audience=self._aud, issuer=self._iss)
        except HubError:
            raise
        except jwt.InvalidSignatureError:
            raise InvalidToken(f"{_BAD}: signature verification failed") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"{_BAD}: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"{_BAD}: wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"{_BAD}: missing the '{exc.claim}' claim") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"{_BAD}: algorithm not allowed") from None
        except Exception:  # any other decode problem is the client's, never a 500
            raise InvalidToken(f"{_BAD}: malformed token") from None
        return self._principal(claims, now)

    def _principal(self, claims: dict[str, Any], now: float) -> tuple[Principal, float]:
        leeway = self._leeway
        exp = _num(claims, "exp")
        assert exp is not None  # required above
        if now >= exp + leeway:
            raise TokenExpired("Bearer token has expired")
        nbf = _num(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise TokenNotYetValid("Bearer token is not valid yet (nbf)")
        iat = _num(claims, "iat")
        if iat is not None and now + leeway < iat:
            raise TokenNotYetValid("Bearer token was issued in the future (iat)")
        sub = _name(claims.get("sub"), "sub", _MAX_SUB)
        raw_tenant = claims.get("tenant")
        tenant = sub if raw_tenant is None else _name(raw_tenant, "tenant", _MAX_TENANT)
        scope = claims.get("scope")
        if scope is None:
            scope = claims.get("scp")
        principal = Principal(sub=sub, tenant=tenant, scopes=_scopes(scope),
                              models=_models(claims.get("models")),
                              priority=_priority(claims.get("priority")),
                              priorities=_priorities(claims.get("priorities")))
        return principal, exp + leeway
