"""Spill-over: when a request leaves the local fleet for a fallback upstream.

A worker with ``tier: fallback`` (an OpenAI-compatible provider, or another hub) is
never an ordinary candidate. The proxy sends a request there only when the request may
spill (:func:`plan_for`: ``spill:`` config, then :attr:`Proxy.spill_gate`, e.g. a
tenant's budget) and one of the triggers fires:

* ``no_local``: no healthy local worker serves the model, or every local attempt failed
  before the client's first byte;
* ``queue_budget``: every local worker is at ``max_concurrency`` and the request would
  wait longer than its class's ``max_queue_ms``. It waits that long in the hub's queue
  and then spills; with a budget of 0, or a queue that is full (it would be refused
  anyway), it spills at once;
* ``first_byte_budget``: the local attempt sent nothing within ``first_byte_ms``. The
  attempt is cancelled, which closes its upstream connection, so llama.cpp sees the
  disconnect and frees its slot, and the request goes to the fallback. Only while
  nothing has been written to the client: a started answer is never moved.

Decisions here are pure and sync; the proxy does the waiting and the sending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hub.errors import HubError
from hub.forward.spill_config import DEFAULT_CLASS, Budgets, SpillConfig


class Reason(StrEnum):
    """Why a request spilled: the ``reason`` label of ``spokehub_spillovers_total``."""

    NO_LOCAL = "no_local"
    QUEUE_BUDGET = "queue_budget"
    FIRST_BYTE_BUDGET = "first_byte_budget"


class SpillOver(Exception):
    """Raised inside the local path: leave it for the fallback tier. ``error`` is what
    the client gets if no fallback can take the request either."""

    def __init__(self, reason: Reason, error: HubError) -> None:
        super().__init__(f"{reason}: {error.message}")
        self.reason = reason
        self.error = error


@dataclass(frozen=True, slots=True)
class SpillPlan:
    """A request that may spill, and its budgets in seconds (None: no such trigger)."""

    max_queue_s: float | None = None
    first_byte_s: float | None = None


def enabled_for(cfg: SpillConfig, tenant: str, model: str) -> bool:
    """The tenant's setting, else the model's, else the section's default."""
    t = cfg.tenants.get(tenant)
    if t is not None and t.enabled is not None:
        return t.enabled
    m = cfg.models.get(model)
    return cfg.enabled if m is None else m


def _budget(tenant: Mapping[str, float], base: Mapping[str, float],
            priority: str) -> float | None:
    """The tenant's budget for the class, else the section's; a class not named takes
    the ``default`` entry of the same mapping."""
    for per_class in (tenant, base):
        if per_class:
            value = per_class.get(priority, per_class.get(DEFAULT_CLASS))
            if value is not None:
                return value
    return None


def plan_for(cfg: SpillConfig, tenant: str, model: str, priority: str) -> SpillPlan | None:
    """The request's spill plan, or None when it may not leave the local fleet."""
    if not enabled_for(cfg, tenant, model):
        return None
    t = cfg.tenants.get(tenant)
    own = Budgets() if t is None else t.budgets
    base = cfg.budgets
    return SpillPlan(max_queue_s=_budget(own.max_queue_s, base.max_queue_s, priority),
                     first_byte_s=_budget(own.first_byte_s, base.first_byte_s, priority))


def spill_now_instead_of_queueing(plan: SpillPlan | None, waiting: int,
                                  max_waiters: int) -> bool:
    """Whether a request that finds every local worker full spills without queueing:
    its queue budget is 0, or the queue is full (it would be refused: it cannot clear
    in time)."""
    if plan is None or plan.max_queue_s is None:
        return plan is not None and waiting >= max_waiters
    return plan.max_queue_s <= 0 or waiting >= max_waiters


def first_byte_left(plan: SpillPlan | None, first_sent: float, now: float) -> float | None:
    """How long the next local attempt may take to its first byte before the request
    spills; the budget counts from the first local attempt (0.0: not sent yet), so a
    failover to a second local worker does not start it afresh. None: no budget."""
    if plan is None or plan.first_byte_s is None:
        return None
    if not first_sent:
        return plan.first_byte_s
    return max(0.0, plan.first_byte_s - (now - first_sent))
