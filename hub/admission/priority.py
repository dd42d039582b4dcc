"""A request's priority class, resolved once per request in the API layer.

The class decides the request's place in the hub's worker queue
(``worker_queue.py``): ``interactive`` first, then ``batch`` (aged so it cannot
starve), then ``sheddable`` (refused first when the queue fills).

Where the class comes from, first match wins:

1. the ``X-Spokehub-Priority`` header, if the caller may ask for that class: a
   token may always ask for its own class or a lower one (marking one's own work as
   less urgent takes nothing from anyone); a higher class needs the token's
   ``priorities`` claim to list it. With auth off every class may be asked for;
2. the token's ``priority`` claim;
3. the tenant's ``admission.tenants.X.priority``, else ``admission.priority``;
4. ``interactive``.

An unknown class is a 400 (``invalid_priority``), a class the token may not ask for
a 403 (``priority_not_allowed``), both in the caller's API shape.

A request's *cost* in the fair queue is an estimate of the tokens it puts on the
fleet: its body bytes / 4 (a rough prompt token count that needs no tokenizer)
plus the completion tokens it asks for (``max_tokens`` times ``n``, as capped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.errors import BadRequest, Forbidden

if TYPE_CHECKING:
    from hub.auth.principal import Principal

INTERACTIVE = "interactive"
BATCH = "batch"
SHEDDABLE = "sheddable"
CLASSES: tuple[str, ...] = (INTERACTIVE, BATCH, SHEDDABLE)  # highest first: index = rank
HEADER = "X-Spokehub-Priority"
BYTES_PER_TOKEN = 4
_MAX_ECHO = 40


class InvalidPriority(BadRequest):
    code = "invalid_priority"


class PriorityNotAllowed(Forbidden):
    code = "priority_not_allowed"


def rank(klass: str) -> int:
    """0 for the highest class."""
    return CLASSES.index(klass)


def resolve(header: str | None, principal: Principal, tenant_default: str) -> str:
    """The request's class (see the module docstring); raises a 400 or 403 HubError."""
    base = principal.priority or tenant_default
    if header is None or not header.strip():
        return base
    asked = header.strip().lower()
    if asked not in CLASSES:
        shown = header if len(header) <= _MAX_ECHO else header[:_MAX_ECHO] + "..."
        raise InvalidPriority(f"{HEADER} must be one of {', '.join(CLASSES)}; "
                              f"got {shown!r}")
    allowed = principal.priorities
    if allowed is None or asked in allowed or rank(asked) >= rank(base):
        return asked
    raise PriorityNotAllowed(f"This API key may not ask for the {asked!r} priority "
                             f"(its class is {base!r})")


def queue_cost(body_bytes: int, requested_tokens: int) -> int:
    """Estimated tokens a request puts on the fleet: prompt (bytes / 4) + completion."""
    return max(1, body_bytes // BYTES_PER_TOKEN + max(0, requested_tokens))
