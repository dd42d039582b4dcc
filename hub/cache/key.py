"""The cache key of a request: HMAC-SHA256 over who asks, where, for which model, what.

``key = HMAC-SHA256(pepper, lp(tenant) || lp(route) || lp(model) || lp(canonical body))``
where ``lp(x)`` is ``x``'s UTF-8 length as 8 bytes big-endian followed by ``x``. The
length prefixes make the fields unambiguous: ``("ab", "c")`` and ``("a", "bc")`` hash
different bytes, so no concatenation of one tenant's fields can equal another's. The
tenant is in every key, so tenants never share an entry; the pepper keeps keys from
being computed (or confirmed) by anyone who only knows the request.

The canonical body is the parsed request, after caps and alias resolution, without the
fields that do not change the answer (:data:`NOT_KEYED`), as compact JSON with sorted
keys. A streamed and a non-stream request for the same thing share an entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

# Fields that change how the answer is delivered or accounted, not what it says:
# ``stream``/``stream_options`` (the replay honours ``include_usage``), ``user`` (the
# end user's id for abuse tracking), ``store``/``metadata`` (OpenAI's stored-completion
# bookkeeping). ``model`` is keyed on its own, as the model the hub resolved.
NOT_KEYED = frozenset({"model", "stream", "stream_options", "user", "store", "metadata"})
_canonical_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False).encode


def canonical_body(payload: dict[str, Any]) -> bytes:
    """The request's keyed fields as canonical JSON bytes (key order and spacing do not
    matter; lone surrogates from ``\\ud800`` escapes are kept, not rejected)."""
    keyed = {k: v for k, v in payload.items() if k not in NOT_KEYED}
    return _canonical_dumps(keyed).encode("utf-8", "surrogatepass")


def _prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def cache_key(pepper: bytes, tenant: str, route: str, model: str, body: bytes) -> bytes:
    """The 32-byte key; ``body`` is :func:`canonical_body`'s."""
    mac = hmac.new(pepper, digestmod=hashlib.sha256)
    for part in (tenant.encode("utf-8", "surrogatepass"), route.encode(),
                 model.encode("utf-8", "surrogatepass"), body):
        mac.update(_prefixed(part))
    return mac.digest()
