"""Verifier: the JWT attack set, claims, key rotation and the verified-token cache."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.auth.config import AuthConfig
from hub.auth.keys import KeyRing, RingKey
from hub.auth.principal import (
    InsufficientScope,
    ModelNotAllowed,
    Principal,
    require_model,
    require_scope,
)
from hub.auth.verifier import Verifier
from hub.errors import AuthError, Forbidden
from tests.auth.conftest import (
    HS_SECRET,
    NOW,
    Clock,
    KeyFiles,
    auth_cfg,
    hs_entry,
    pem_entry,
)

AUD = "spokehub"
ISS = "https://issuer.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: object) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"sub": "alice", "tenant": "acme", "scope": "infer",
                         "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 3600,
                         "aud": AUD, "iss": ISS}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def hs(payload: dict[str, Any], kid: str | None = "hs1", secret: str = HS_SECRET,
       alg: str = "HS256") -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, secret, algorithm=alg, headers=headers)


def manual_hmac(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """An HMAC-SHA256 JWT over any secret (pyjwt refuses PEM keys as HMAC secrets)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


@pytest.fixture
def cfg(hs_env: str, rsa_key: KeyFiles) -> AuthConfig:
    return auth_cfg(hs_entry(), pem_entry("rs1", "RS256", rsa_key), audience=AUD, issuer=ISS)


@pytest.fixture
def verifier(cfg: AuthConfig, clock: Clock) -> Verifier:
    return Verifier(cfg, KeyRing.load(cfg), clock)


def rs(payload: dict[str, Any], files: KeyFiles, kid: str | None = "rs1",
       alg: str = "RS256") -> str:
    key = serialization.load_pem_private_key(files.private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def assert_401(verifier: Verifier, header: str | None, code: str = "invalid_api_key") -> None:
    with pytest.raises(AuthError) as info:
        verifier.verify(header)
    exc = info.value
    assert exc.status == 401
    assert exc.code == code
    assert exc.headers["WWW-Authenticate"].startswith("Bearer")
    if isinstance(header, str) and header:
        token = header.partition(" ")[2]
        assert not token or token not in exc.message


# -- happy path ---------------------------------------------------------------

def test_valid_hs_and_rs_tokens(verifier: Verifier, rsa_key: KeyFiles) -> None:
    p = verifier.verify("Bearer " + hs(claims()))
    assert p == Principal(sub="alice", tenant="acme", scopes=frozenset({"infer"}), models=None)
    p = verifier.verify("Bearer " + rs(claims(scope="infer admin"), rsa_key))
    assert p.scopes == {"infer", "admin"}


def test_scheme_is_case_insensitive_and_spacing_tolerated(verifier: Verifier) -> None:
    token = hs(claims())
    assert verifier.verify("bearer " + token).tenant == "acme"
    assert verifier.verify("BEARER   " + token + " ").tenant == "acme"


@pytest.mark.parametrize(("scope", "expected"), [
    ("infer admin", {"infer", "admin"}),
    ("infer,admin", {"infer", "admin"}),
    ("infer, agent", {"infer", "agent"}),
    (["infer", "agent"], {"infer", "agent"}),
    (None, set()),
])
def test_scope_forms(verifier: Verifier, scope: object, expected: set[str]) -> None:
    assert verifier.verify("Bearer " + hs(claims(scope=scope))).scopes == expected


def test_scp_is_read_when_scope_absent(verifier: Verifier) -> None:
    assert verifier.verify("Bearer " + hs(claims(scope=None, scp=["admin"]))).scopes == {
        "admin"}


def test_tenant_defaults_to_sub_and_models_allow_list(verifier: Verifier) -> None:
    p = verifier.verify("Bearer " + hs(claims(tenant=None, models=["llama", "qwen"])))
    assert p.tenant == "alice"
    assert p.models == frozenset({"llama", "qwen"})


def test_require_scope_and_model() -> None:
    p = Principal(sub="s", tenant="t", scopes=frozenset({"infer"}),
                  models=frozenset({"llama"}))
    require_scope(p, "infer")
    require_model(p, "llama")
    with pytest.raises(InsufficientScope) as scope_err:
        require_scope(p, "admin")
    assert scope_err.value.status == 403 and "'admin'" in scope_err.value.message
    with pytest.raises(ModelNotAllowed) as model_err:
        require_model(p, "qwen")
    assert isinstance(model_err.value, Forbidden)
    assert model_err.value.status == 403 and model_err.value.code == "model_not_allowed"
    require_model(Principal("s", "t", frozenset(), None), "anything")


def test_leeway_accepts_small_skew(verifier: Verifier, clock: Clock) -> None:
    token = hs(claims(exp=int(NOW) - 10, nbf=int(NOW) + 10, iat=int(NOW) + 10))
    assert verifier.verify("Bearer " + token).sub == "alice"


# -- the attack set: every one is a 401, never another exception ---------------

def _none_alg() -> str:
    return jwt.encode(claims(), cast(Any, None), algorithm="none")


def _none_alg_with_kid_and_sig() -> str:
    return f"{b64json({'alg': 'none', 'kid': 'hs1'})}.{b64json(claims())}.{b64(b'x' * 32)}"


def _hs_rs_confusion(files: KeyFiles) -> str:
    return manual_hmac({"alg": "HS256", "typ": "JWT", "kid": "rs1"}, claims(),
                       files.public_pem)


def _hs_rs_confusion_no_kid(files: KeyFiles) -> str:
    return manual_hmac({"alg": "HS256", "typ": "JWT"}, claims(), files.public_pem)


def _tampered() -> str:
    h, _, s = hs(claims()).split(".")
    return f"{h}.{b64json(claims(tenant='victim', scope='admin'))}.{s}"


def _stripped() -> str:
    h, p, _ = hs(claims()).split(".")
    return f"{h}.{p}."


def _two_parts() -> str:
    h, p, _ = hs(claims()).split(".")
    return f"{h}.{p}"


ATTACKS: dict[str, Callable[[KeyFiles, KeyFiles], str] | tuple[str, str]] = {
    "no header": ("", "missing_api_key"),
    "bearer without token": ("Bearer", "missing_api_key"),
    "bearer blank": ("Bearer    ", "missing_api_key"),
    "basic scheme": ("Basic dXNlcjpwYXNzd29yZA==", "invalid_api_key"),
    "token without scheme": ("eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "invalid_api_key"),
    "garbage": ("Bearer !!!not a token!!!", "invalid_api_key"),
    "garbage segments": ("Bearer aaa.bbb.ccc", "invalid_api_key"),
    "jwe shaped": ("Bearer a.b.c.d.e", "invalid_api_key"),
    "non-json header": (f"Bearer {b64(b'nope')}.{b64json(claims())}.{b64(b's')}",
                        "invalid_api_key"),
    "payload not object": (f"Bearer {b64json({'alg': 'HS256', 'kid': 'hs1'})}."
                           f"{b64json([1, 2])}.{b64(b's')}", "invalid_api_key"),
}
BUILT: dict[str, Callable[[KeyFiles, KeyFiles], str]] = {
    "alg none": lambda r, o: _none_alg(),
    "alg none with kid and signature": lambda r, o: _none_alg_with_kid_and_sig(),
    "hs/rs confusion": lambda r, o: _hs_rs_confusion(r),
    "hs/rs confusion without kid": lambda r, o: _hs_rs_confusion_no_kid(r),
    "hs token claiming the rs kid": lambda r, o: hs(claims(), kid="rs1"),
    "rs token claiming the hs kid": lambda r, o: rs(claims(), r, kid="hs1"),
    "wrong hs secret": lambda r, o: hs(claims(), secret="x" * 40),
    "rs signed by another key": lambda r, o: rs(claims(), o),
    "ps256 with the rs key": lambda r, o: rs(claims(), r, alg="PS256"),
    "no kid with several keys": lambda r, o: hs(claims(), kid=None),
    "unknown kid": lambda r, o: hs(claims(), kid="nope"),
    "non-string kid": lambda r, o: manual_hmac({"alg": "HS256", "kid": 7}, claims(),
                                               HS_SECRET.encode()),
    "tampered payload": lambda r, o: _tampered(),
    "signature stripped": lambda r, o: _stripped(),
    "two segments": lambda r, o: _two_parts(),
    "wrong audience": lambda r, o: hs(claims(aud="other")),
    "missing audience": lambda r, o: hs(claims(aud=None)),
    "wrong issuer": lambda r, o: hs(claims(iss="https://evil.test")),
    "missing exp": lambda r, o: hs(claims(exp=None)),
    "missing sub": lambda r, o: hs(claims(sub=None)),
    "exp not a number": lambda r, o: hs(claims(exp="9999999999")),
    "sub not a string": lambda r, o: hs(claims(sub=42)),
    "empty tenant": lambda r, o: hs(claims(tenant="")),
    "scope not a string": lambda r, o: hs(claims(scope=7)),
    "models not a list": lambda r, o: hs(claims(models="llama")),
    "hs384 on an hs256 key": lambda r, o: hs(claims(), alg="HS384", secret="k" * 48),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_header_rejected(verifier: Verifier, name: str) -> None:
    header, code = cast(tuple[str, str], ATTACKS[name])
    assert_401(verifier, header or None, code)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_attack_token_rejected(verifier: Verifier, rsa_key: KeyFiles, rsa_key2: KeyFiles,
                               name: str) -> None:
    assert_401(verifier, "Bearer " + BUILT[name](rsa_key, rsa_key2))


def test_expired(verifier: Verifier) -> None:
    assert_401(verifier, "Bearer " + hs(claims(exp=int(NOW) - 31)), "token_expired")


def test_not_yet_valid(verifier: Verifier) -> None:
    assert_401(verifier, "Bearer " + hs(claims(nbf=int(NOW) + 300)), "token_not_yet_valid")
    assert_401(verifier, "Bearer " + hs(claims(iat=int(NOW) + 300)), "token_not_yet_valid")


def test_huge_token_is_401(verifier: Verifier) -> None:
    big = hs(claims(pad="x" * 65536))
    assert len(big) > 64 * 1024
    assert_401(verifier, "Bearer " + big)
    assert_401(verifier, "Bearer " + "a" * (64 * 1024))
    assert_401(verifier, "Bearer" + " " * 70000 + "abc")


def test_aud_in_token_without_configured_audience(hs_env: str, clock: Clock) -> None:
    cfg = auth_cfg(hs_entry())
    v = Verifier(cfg, KeyRing.load(cfg), clock)
    assert v.verify("Bearer " + hs(claims(aud=None, iss=None))).sub == "alice"
    assert_401(v, "Bearer " + hs(claims(iss=None)))


def test_single_key_accepts_token_without_kid(hs_env: str, clock: Clock) -> None:
    cfg = auth_cfg(hs_entry())
    v = Verifier(cfg, KeyRing.load(cfg), clock)
    assert v.verify("Bearer " + hs(claims(aud=None, iss=None), kid=None)).sub == "alice"


def test_non_str_header_is_401(verifier: Verifier) -> None:
    assert_401(verifier, cast(Any, b"Bearer abc"))
    assert_401(verifier, cast(Any, 12345))


# -- key rotation ---------------------------------------------------------------

def test_rotation_old_and_new_kid_both_valid(monkeypatch: pytest.MonkeyPatch,
                                             clock: Clock) -> None:
    old, new = "o" * 40, "n" * 48
    monkeypatch.setenv("OLD_SECRET", old)
    monkeypatch.setenv("NEW_SECRET", new)
    both = auth_cfg(hs_entry("k-old", env="OLD_SECRET"), hs_entry("k-new", "HS384", "NEW_SECRET"))
    v = Verifier(both, KeyRing.load(both), clock)
    old_token = hs(claims(aud=None, iss=None), kid="k-old", secret=old)
    new_token = hs(claims(aud=None, iss=None, tenant="beta"), kid="k-new", secret=new,
                   alg="HS384")
    assert v.verify("Bearer " + old_token).tenant == "acme"
    assert v.verify("Bearer " + new_token).tenant == "beta"
    # Retire the old key: the new verifier (with its fresh cache) refuses old tokens.
    only_new = auth_cfg(hs_entry("k-new", "HS384", "NEW_SECRET"))
    v2 = Verifier(only_new, KeyRing.load(only_new), clock)
    assert v2.cached == 0
    assert v2.verify("Bearer " + new_token).tenant == "beta"
    assert_401(v2, "Bearer " + old_token)


# -- cache ----------------------------------------------------------------------

def test_cache_hit_skips_decode_and_honours_exp(verifier: Verifier, clock: Clock,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    token = hs(claims(exp=int(NOW) + 60))
    first = verifier.verify("Bearer " + token)
    assert verifier.cached == 1

    def boom(*args: object, **kwargs: object) -> dict[str, Any]:
        raise AssertionError("a cache hit must not decode")

    with monkeypatch.context() as m:
        m.setattr(jwt, "decode", boom)
        clock.now = NOW + 60 + 29  # inside exp + leeway (30)
        assert verifier.verify("Bearer " + token) is first
    clock.now = NOW + 60 + 30
    assert_401(verifier, "Bearer " + token, "token_expired")
    assert verifier.cached == 0


def test_cache_is_bounded_lru(hs_env: str, clock: Clock) -> None:
    cfg = auth_cfg(hs_entry(), cache_size=2)
    v = Verifier(cfg, KeyRing.load(cfg), clock)
    tokens = [hs(claims(aud=None, iss=None, sub=f"u{i}")) for i in range(3)]
    for t in tokens:
        v.verify("Bearer " + t)
    assert v.cached == 2


def test_cache_disabled(hs_env: str, clock: Clock) -> None:
    cfg = auth_cfg(hs_entry(), cache_size=0)
    v = Verifier(cfg, KeyRing.load(cfg), clock)
    v.verify("Bearer " + hs(claims(aud=None, iss=None)))
    assert v.cached == 0


def test_failures_are_not_cached(verifier: Verifier) -> None:
    assert_401(verifier, "Bearer " + hs(claims(aud="other")))
    assert verifier.cached == 0


# -- property: arbitrary input only ever yields AuthError -------------------------

_RING = KeyRing([RingKey("hs1", "HS256", HS_SECRET.encode(), "test")])
_VERIFIER = Verifier(AuthConfig(enabled=True), _RING, lambda: NOW)
_SEGMENT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                   min_size=1, max_size=60)
_VALID = hs(claims(aud=None, iss=None))


def _mutations() -> st.SearchStrategy[str]:
    return st.tuples(st.integers(0, len(_VALID) - 1), st.characters()).map(
        lambda ic: _VALID[:ic[0]] + ic[1] + _VALID[ic[0] + 1:])


HEADERS = st.one_of(
    st.none(),
    st.text(),
    st.binary().map(lambda b: b.decode("latin-1")),
    st.text().map(lambda t: "Bearer " + t),
    st.tuples(_SEGMENT, _SEGMENT, _SEGMENT).map(lambda s: "Bearer " + ".".join(s)),
    st.builds(lambda h, p, s: f"Bearer {b64json(h)}.{b64json(p)}.{s}",
              st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64"]),
                              st.one_of(st.text(max_size=8), st.integers(), st.none(),
                                        st.sampled_from(["HS256", "none", "RS256", "hs1"]))),
              st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=8),
                                                             st.integers(), st.floats())),
              _SEGMENT),
    _mutations().map(lambda t: "Bearer " + t),
)


@settings(database=None, max_examples=400, deadline=None)
@given(HEADERS)
def test_verify_only_raises_auth_error(header: str | None) -> None:
    try:
        _VERIFIER.verify(header)
    except AuthError as exc:
        assert exc.status == 401
        assert "WWW-Authenticate" in exc.headers


@settings(database=None, max_examples=100, deadline=None)
@given(st.binary())
def test_verify_raw_bytes_only_raises_auth_error(raw: bytes) -> None:
    with pytest.raises(AuthError):
        _VERIFIER.verify(cast(Any, raw))


def test_hs_rs_confusion_against_a_single_rs_key(rsa_key: KeyFiles, clock: Clock) -> None:
    cfg = auth_cfg(pem_entry("rs1", "RS256", rsa_key, sign=False))
    v = Verifier(cfg, KeyRing.load(cfg), clock)
    good = rs(claims(aud=None, iss=None), rsa_key, kid=None)
    assert v.verify("Bearer " + good).sub == "alice"
    payload = claims(aud=None, iss=None)
    for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "kid": "rs1"}):
        assert_401(v, "Bearer " + manual_hmac(header, payload, rsa_key.public_pem))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claim_beyond_float_range_is_401(verifier: Verifier, claim: str) -> None:
    assert_401(verifier, f"Bearer {hs(claims(**{claim: 10**400}))}")
