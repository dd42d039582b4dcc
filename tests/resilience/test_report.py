"""FleetReport: one attempt outcome updates breaker, passive health and latency."""

from __future__ import annotations

import pytest

from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult, Registry, Worker
from hub.resilience.breaker import BreakerConfig, Breakers, State
from hub.resilience.report import BREAKER_OUTCOME, AttemptOutcome, FleetReport


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _setup(**breaker: float) -> tuple[FleetReport, Worker, FakeClock]:
    registry = Registry([WorkerSpec("w0", "http://w0")])
    worker = registry.get("w0")
    assert worker is not None
    registry.apply_probe(worker, ProbeResult(healthy=True, models=frozenset({"m"})))
    clock = FakeClock()
    fleet = FleetReport(registry, Breakers(BreakerConfig(**breaker), clock))  # type: ignore[arg-type]
    return fleet, worker, clock


def _state(fleet: FleetReport) -> State:
    return fleet.breakers.get("w0").state  # via a call, so mypy does not pin it


def test_every_outcome_has_a_breaker_verdict() -> None:
    assert set(BREAKER_OUTCOME) == set(AttemptOutcome)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, AttemptOutcome.ANSWERED), (301, AttemptOutcome.ANSWERED),
    (400, AttemptOutcome.CLIENT_ERROR), (429, AttemptOutcome.THROTTLED),
    (500, AttemptOutcome.SERVER_ERROR), (503, AttemptOutcome.SERVER_ERROR),
])
def test_outcome_for_status(status: int, outcome: AttemptOutcome) -> None:
    assert AttemptOutcome.for_status(status) is outcome


def test_answered_attempt_records_ttfb_for_its_model() -> None:
    fleet, worker, _ = _setup()
    fleet.report(worker, "m", AttemptOutcome.ANSWERED, ttfb_s=0.25)
    assert (worker.ttfb("m").value, worker.ttfb("m").samples) == (0.25, 1)
    assert worker.ttfb("other").samples == 0
    assert worker.ewma_latency_s == 0.25


def test_a_quick_4xx_is_no_latency_sample() -> None:
    fleet, worker, _ = _setup()
    fleet.report(worker, "m", AttemptOutcome.CLIENT_ERROR, ttfb_s=0.001)
    assert worker.latency_samples == 0 and worker.ttfb("m").samples == 0


def test_connect_failure_takes_the_worker_out_and_counts() -> None:
    fleet, worker, _ = _setup(consecutive_failures=1)
    fleet.report(worker, "m", AttemptOutcome.CONNECT_FAILED, detail="connect: refused")
    assert not worker.healthy and worker.detail == "connect: refused"
    assert _state(fleet) is State.OPEN


@pytest.mark.parametrize("outcome", [AttemptOutcome.TIMED_OUT, AttemptOutcome.BROKEN,
                                     AttemptOutcome.SERVER_ERROR])
def test_worker_failures_count_but_keep_it_in_rotation(outcome: AttemptOutcome) -> None:
    fleet, worker, _ = _setup()
    fleet.report(worker, "m", outcome)
    assert worker.healthy
    assert fleet.breakers.get("w0").snapshot()["window_failures"] == 1


@pytest.mark.parametrize("outcome", [AttemptOutcome.REPEATED_SERVER_ERROR,
                                     AttemptOutcome.THROTTLED, AttemptOutcome.ABANDONED])
def test_outcomes_that_are_not_the_workers_fault_do_not_count(outcome: AttemptOutcome) -> None:
    fleet, worker, _ = _setup()
    fleet.report(worker, "m", outcome)
    assert fleet.breakers.get("w0").snapshot()["window_requests"] == 0


def test_an_attempt_reports_once_and_an_unreported_one_frees_the_probe() -> None:
    fleet, worker, clock = _setup(consecutive_failures=1, cooldown_s=5)
    breaker = fleet.breakers.get("w0")
    fleet.report(worker, "m", AttemptOutcome.SERVER_ERROR)
    assert _state(fleet) is State.OPEN
    clock.now += 5
    assert breaker.allow()  # the half-open probe
    with fleet.attempt(worker, "m"):
        pass  # e.g. the client left before an outcome
    assert breaker.allow()  # the probe slot was given back
    with fleet.attempt(worker, "m") as report:
        report.report(AttemptOutcome.ANSWERED, ttfb_s=0.5)
        report.report(AttemptOutcome.BROKEN)  # later troubles of a started stream
        assert repr(report) == "<AttemptReport w0 m answered>"
    assert _state(fleet) is State.CLOSED
    assert worker.ttfb("m").samples == 1
