"""The glue between the request path and a request-aware policy (``cache_aware``).

The API layer builds the call's :class:`RouteRequest` (its prompt key and session key)
with :func:`route_request`, only when the policy uses one and the route carries a
prompt: hashing costs about 18 us for a 1.3 KB body, wasted under any other policy.
The proxy then places each attempt with :func:`place`, and tells the policy how the
attempt went: :func:`failed` (nothing reached the client, or the worker refused the
request: its prompt is not cached there) or :func:`served` (a whole 2xx answer or a
completed stream). A stream cut after its first byte says neither. Every answer under
``cache_aware`` carries ``X-Spokehub-Route`` (:func:`route_header`); other policies'
answers do not: they have no reason to give beyond their name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hub.routing.cache_aware import CacheAware
from hub.routing.request import SESSION_HEADER, Choice, RouteRequest, session_key_of

if TYPE_CHECKING:
    from hub.fleet.registry import Worker
    from hub.forward.call import Call
    from hub.routing.base import Policy

ROUTE_HEADER = "X-Spokehub-Route"

# Routes whose body carries a prompt a worker may have cached (the hub's route names,
# below /v1 for OpenAI and Anthropic). Embeddings, rerank and tokenize are placed by
# load: they keep no KV cache between requests.
PROMPT_ROUTES = frozenset({"/chat/completions", "/completions", "/responses", "/messages",
                           "/api/chat", "/api/generate"})


def route_request(policy: Policy, route: str, model: str, payload: Mapping[str, Any], *,
                  tenant: str, headers: Mapping[str, str]) -> RouteRequest | None:
    """The request as ``policy`` sees it, or None when it has no use for one."""
    if not isinstance(policy, CacheAware) or route not in PROMPT_ROUTES:
        return None
    return policy.route_request(model, payload, tenant=tenant,
                                session_key=session_key_of(headers.get(SESSION_HEADER),
                                                           payload))


def place(policy: Policy, candidates: Sequence[Worker], model: str,
          call: Call | None) -> Worker | None:
    """Choose among ``candidates``; a cache-aware choice is kept on the call (a request
    without a prompt key is placed by load, and says so)."""
    if not isinstance(policy, CacheAware):
        return policy.pick(candidates, model=model)
    if call is not None and call.route_req is not None:
        choice = policy.choose(candidates, call.route_req)
    else:
        worker = policy.pick(candidates, model=model)
        choice = None if worker is None else Choice(worker, "load")
    if call is not None:
        call.choice = choice
    return None if choice is None else choice.worker


def failed(policy: Policy, call: Call) -> None:
    """The chosen worker did not take the prompt: take back what the choice recorded."""
    choice, req = call.choice, call.route_req
    if isinstance(policy, CacheAware) and choice is not None and req is not None:
        policy.failed(choice, req)


def served(policy: Policy, call: Call, status: int) -> None:
    """The attempt ended; if with a whole good answer, the worker holds the prompt now."""
    choice, req = call.choice, call.route_req
    if not isinstance(policy, CacheAware) or choice is None or req is None:
        return
    if 200 <= status < 300 and call.error is None and call.status != 499:
        policy.served(choice.worker, req)
    elif call.error is None and call.status != 499:
        policy.failed(choice, req)  # the worker answered but refused (a 4xx)


def forget(policy: Policy, name: str) -> None:
    """Worker ``name``'s cache is gone (removed, down, moved)."""
    if isinstance(policy, CacheAware):
        policy.forget(name)


def route_header(call: Call) -> dict[str, str]:
    """``X-Spokehub-Route`` for the answer, if the policy gave a reason."""
    choice = call.choice
    return {} if choice is None else {ROUTE_HEADER: choice.header()}
