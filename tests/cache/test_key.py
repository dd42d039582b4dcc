"""Cache keys: tenants, routes, models and bodies never share one; field boundaries
cannot be moved; the canonical body ignores key order and delivery-only fields."""

from __future__ import annotations

import hashlib
import hmac

from hub.cache.key import NOT_KEYED, cache_key, canonical_body

PEPPER = b"p" * 32
BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def key(tenant: str = "acme", route: str = "/chat/completions", model: str = "tiny",
        body: dict[str, object] | None = None, pepper: bytes = PEPPER) -> bytes:
    return cache_key(pepper, tenant, route, model, canonical_body(body or BODY))


def test_is_hmac_sha256_over_length_prefixed_fields() -> None:
    body = canonical_body(BODY)
    message = b"".join(len(x).to_bytes(8, "big") + x
                       for x in (b"acme", b"/chat/completions", b"tiny", body))
    assert key() == hmac.new(PEPPER, message, hashlib.sha256).digest()
    assert len(key()) == 32


def test_tenant_route_model_body_and_pepper_all_key() -> None:
    keys = {key(), key(tenant="globex"), key(route="/completions"), key(model="big"),
            key(body={**BODY, "max_tokens": 5}), key(pepper=b"q" * 32)}
    assert len(keys) == 6


def test_length_prefix_prevents_concatenation_collisions() -> None:
    assert key(tenant="ab", model="c") != key(tenant="a", model="bc")
    # moving bytes between the tenant and the route, or the model and the body
    assert cache_key(PEPPER, "a/chat", "/x", "m", b"{}") != \
        cache_key(PEPPER, "a", "/chat/x", "m", b"{}")
    assert cache_key(PEPPER, "t", "/r", "m{", b"}") != cache_key(PEPPER, "t", "/r", "m", b"{}")
    # a tenant name that holds what a prefix would look like
    sneaky = "a" + (2).to_bytes(8, "big").decode("latin-1") + "bc"
    assert key(tenant=sneaky) != key(tenant="a")


def test_canonical_ignores_order_spacing_and_delivery_fields() -> None:
    a = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "x"}
    b = {"model": "y", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
         "stream": True, "stream_options": {"include_usage": True}, "user": "u-1",
         "store": False, "metadata": {"k": "v"}}
    assert canonical_body(a) == canonical_body(b)
    assert canonical_body(a) == b'{"messages":[{"content":"hi","role":"user"}],"temperature":0}'
    assert {"stream", "stream_options", "user", "model"} <= NOT_KEYED


def test_canonical_keeps_what_changes_the_answer() -> None:
    base = canonical_body(BODY)
    for extra in ({"seed": 1}, {"top_p": 0.5}, {"max_tokens": 3}, {"logprobs": True},
                  {"response_format": {"type": "json_object"}}):
        assert canonical_body({**BODY, **extra}) != base, extra


def test_canonical_is_utf8_and_survives_lone_surrogates() -> None:
    assert canonical_body({"prompt": "é"}) == '{"prompt":"é"}'.encode()
    assert canonical_body({"prompt": "\ud800"}) != canonical_body({"prompt": "\ud801"})
