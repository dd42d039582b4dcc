"""Where an attempt's outcome lands: one call updates the breaker, passive health and latency.

The forwarding code says what happened to an attempt (an :class:`AttemptOutcome`);
:class:`FleetReport` decides what that means for the fleet:

* the worker's circuit breaker gets ``SUCCESS``, ``FAILURE`` or ``IGNORED``
  (:data:`BREAKER_OUTCOME`), through the attempt's :class:`Permit`, so a half-open
  probe slot is released however the attempt ends;
* a failed connect takes the worker out of rotation at once (passive health) until a
  probe brings it back;
* an answered attempt's time to first byte feeds the worker's statistics for that
  model, which the outlier detector and least-loaded tie-breaks read.

An attempt reports once (:class:`AttemptReport`): the first report counts and later
ones are dropped, as with the breaker's permit. Sync and free of I/O.
"""

from __future__ import annotations

from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING

from hub.resilience.breaker import Breakers, Outcome, Permit

if TYPE_CHECKING:
    from hub.fleet.registry import Registry, Worker


class AttemptOutcome(Enum):
    """How one attempt at a worker ended, as far as the worker's health is concerned."""

    ANSWERED = "answered"  # a 2xx/3xx answer, or a stream's first data event
    CLIENT_ERROR = "client_error"  # a 4xx answer: the request's fault
    THROTTLED = "throttled"  # 429: busy, not broken
    SERVER_ERROR = "server_error"  # a 5xx answer
    # A 5xx for a request another worker already answered with a 5xx: more likely the
    # request's fault (a "query of death") than the second worker's, so not charged.
    REPEATED_SERVER_ERROR = "repeated_server_error"
    CONNECT_FAILED = "connect_failed"  # no connection: the worker is down
    BROKEN = "broken"  # the exchange broke after sending, or the answer was unusable
    TIMED_OUT = "timed_out"  # an upstream timeout fired before the answer
    ABANDONED = "abandoned"  # the client left or the hub stopped before an outcome

    @classmethod
    def for_status(cls, status: int) -> AttemptOutcome:
        """Classify an answer's HTTP status."""
        if status >= 500:
            return cls.SERVER_ERROR
        if status == 429:
            return cls.THROTTLED
        if status >= 400:
            return cls.CLIENT_ERROR
        return cls.ANSWERED


BREAKER_OUTCOME: dict[AttemptOutcome, Outcome] = {
    AttemptOutcome.ANSWERED: Outcome.SUCCESS,
    AttemptOutcome.CLIENT_ERROR: Outcome.IGNORED,
    AttemptOutcome.THROTTLED: Outcome.IGNORED,
    AttemptOutcome.SERVER_ERROR: Outcome.FAILURE,
    AttemptOutcome.REPEATED_SERVER_ERROR: Outcome.IGNORED,
    AttemptOutcome.CONNECT_FAILED: Outcome.FAILURE,
    AttemptOutcome.BROKEN: Outcome.FAILURE,
    AttemptOutcome.TIMED_OUT: Outcome.FAILURE,
    AttemptOutcome.ABANDONED: Outcome.IGNORED,
}


class FleetReport:
    """The one place attempts report to. Owns the per-worker breakers."""

    def __init__(self, registry: Registry, breakers: Breakers) -> None:
        self.registry = registry
        self.breakers = breakers

    def attempt(self, worker: Worker, model: str) -> AttemptReport:
        """A report handle for one attempt; take it right after the breaker admitted it."""
        return AttemptReport(self, worker, model, Permit(self.breakers.get(worker.name)))

    def report(self, worker: Worker, model: str, outcome: AttemptOutcome, *,
               ttfb_s: float | None = None, detail: str = "",
               permit: Permit | None = None) -> None:
        """Apply one attempt's outcome. ``ttfb_s`` counts only for an answered attempt
        (a quick 4xx says nothing about generation speed); ``detail`` says why a connect
        failed."""
        verdict = BREAKER_OUTCOME[outcome]
        if permit is not None:
            permit.record(verdict)
        else:
            self.breakers.get(worker.name).record(verdict)
        if outcome is AttemptOutcome.CONNECT_FAILED:
            self.registry.mark_unreachable(worker, detail or "connect failed")
        elif outcome is AttemptOutcome.ANSWERED and ttfb_s is not None:
            worker.observe_ttfb(model, ttfb_s)

    def __repr__(self) -> str:
        return f"<FleetReport {self.registry!r} {self.breakers!r}>"


class AttemptReport:
    """One attempt's outcome, reported once; leaving the block unreported is ``ABANDONED``."""

    __slots__ = ("_fleet", "model", "outcome", "permit", "worker")

    def __init__(self, fleet: FleetReport, worker: Worker, model: str, permit: Permit) -> None:
        self._fleet = fleet
        self.worker = worker
        self.model = model
        self.permit = permit
        self.outcome: AttemptOutcome | None = None

    def report(self, outcome: AttemptOutcome, *, ttfb_s: float | None = None,
               detail: str = "") -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._fleet.report(self.worker, self.model, outcome, ttfb_s=ttfb_s, detail=detail,
                               permit=self.permit)

    def __enter__(self) -> AttemptReport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.report(AttemptOutcome.ABANDONED)

    def __repr__(self) -> str:
        outcome = "pending" if self.outcome is None else self.outcome.value
        return f"<AttemptReport {self.worker.name} {self.model} {outcome}>"
