from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from hub.config.schema import ConfigError
from hub.resilience.breaker import (
    BreakerConfig,
    Breakers,
    CircuitBreaker,
    Outcome,
    Permit,
    State,
    outcome_for_status,
    parse_breaker,
)

S, F, IGN = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(clock: FakeClock, **kw: Any) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**kw), clock, name="w0")


def _state(b: CircuitBreaker) -> State:
    return b.state  # via a call, so type checkers do not pin it between steps


def _feed(b: CircuitBreaker, *outcomes: Outcome) -> None:
    for o in outcomes:
        assert b.allow()
        b.record(o)


def _trip(b: CircuitBreaker) -> None:
    for _ in range(b.cfg.consecutive_failures):
        b.record(F)
    assert _state(b) == "open"


def test_opens_after_consecutive_failures() -> None:
    b = _breaker(FakeClock())
    _feed(b, F, F, F, F)
    assert _state(b) is State.CLOSED
    _feed(b, S)  # a success breaks the streak
    _feed(b, F, F, F, F)
    assert _state(b) is State.CLOSED
    _feed(b, F)
    assert _state(b) == "open"
    assert b.opened_count == 1
    assert not b.allow()


def test_opens_by_failure_ratio_once_min_requests_seen() -> None:
    clock = FakeClock()
    b = _breaker(clock, consecutive_failures=100)
    for _ in range(4):
        _feed(b, S, F)
        clock.advance(1)
    assert _state(b) is State.CLOSED  # 4/8 failed, but fewer than min_requests
    _feed(b, S, F)
    assert _state(b) is State.OPEN  # 5/10 >= 0.5


def test_ratio_window_slides() -> None:
    clock = FakeClock()
    b = _breaker(clock, consecutive_failures=100, window_s=30)
    for _ in range(4):
        _feed(b, F, S)
    clock.advance(31)  # those 8 outcomes fall out of the window
    _feed(b, S, S, S, S, S, S, F, F, F)
    assert _state(b) is State.CLOSED
    assert b.snapshot()["window_requests"] == 9
    _feed(b, F)  # 4/10 failed
    assert _state(b) is State.CLOSED
    _feed(b, F)  # 5/11
    assert _state(b) is State.CLOSED
    _feed(b, F)  # 6/12 = 0.5
    assert _state(b) is State.OPEN


def test_consecutive_trigger_can_be_disabled() -> None:
    b = _breaker(FakeClock(), consecutive_failures=0, min_requests=1000)
    _feed(b, *[F] * 50)
    assert _state(b) is State.CLOSED


def test_cooldown_then_single_probe_then_close() -> None:
    clock = FakeClock()
    b = _breaker(clock)
    _trip(b)
    assert b.retry_at == clock.now + 5
    clock.advance(4.9)
    assert not b.allow()
    assert not b.would_allow()
    clock.advance(0.1)
    assert b.would_allow()
    assert _state(b) is State.OPEN  # would_allow takes nothing
    assert b.allow()
    assert _state(b) is State.HALF_OPEN
    assert not b.allow()
    assert not b.would_allow()
    b.record(S)
    assert _state(b) is State.CLOSED
    assert b.retry_at is None
    assert all(b.allow() for _ in range(10))


def test_failed_probes_back_off_up_to_max_and_close_resets() -> None:
    clock = FakeClock()
    b = _breaker(clock, cooldown_s=5, backoff=2.0, max_cooldown_s=30)
    _trip(b)
    waits = []
    for _ in range(5):
        assert b.retry_at is not None
        waits.append(b.retry_at - clock.now)
        clock.now = b.retry_at
        assert b.allow()
        b.record(F)
        assert _state(b) is State.OPEN
    assert waits == [5, 10, 20, 30, 30]
    assert b.opened_count == 6
    assert b.retry_at is not None
    clock.now = b.retry_at
    assert b.allow()
    b.record(S)
    assert _state(b) is State.CLOSED
    _trip(b)
    assert b.retry_at == clock.now + 5


def test_ignored_outcomes_never_change_state() -> None:
    clock = FakeClock()
    b = _breaker(clock, min_requests=1)
    for _ in range(1000):
        _feed(b, IGN)
    assert _state(b) is State.CLOSED
    assert b.snapshot()["window_requests"] == 0
    b = _breaker(clock)
    _feed(b, F, F, F, F, IGN, IGN, F)  # ignored outcomes do not break the failure streak
    assert _state(b) is State.OPEN
    b.record(IGN)
    b.record(S)  # stragglers finishing while open are dropped
    assert _state(b) is State.OPEN


def test_ignored_probe_frees_the_slot_for_another_probe() -> None:
    clock = FakeClock()
    b = _breaker(clock)
    _trip(b)
    clock.advance(5)
    assert b.allow()
    assert not b.allow()
    b.record(IGN)  # e.g. the probing client hung up
    assert _state(b) is State.HALF_OPEN
    assert b.allow()
    assert not b.allow()
    b.record(F)
    assert _state(b) is State.OPEN
    assert b.cooldown_s == 10


def test_exactly_one_probe_among_100_threads() -> None:
    clock = FakeClock()
    b = _breaker(clock)
    _trip(b)
    clock.advance(5)
    barrier = threading.Barrier(100)
    results: list[bool] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        allowed = b.allow()
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=call) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 100
    assert results.count(True) == 1
    assert _state(b) is State.HALF_OPEN


async def test_exactly_one_probe_among_100_tasks() -> None:
    clock = FakeClock()
    b = _breaker(clock)
    _trip(b)
    clock.advance(5)
    go = asyncio.Event()

    async def call() -> bool:
        await go.wait()
        return b.allow()

    tasks = [asyncio.create_task(call()) for _ in range(100)]
    go.set()
    results = await asyncio.gather(*tasks)
    assert results.count(True) == 1


def test_transition_hook_sees_every_change() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str]] = []
    b = CircuitBreaker(BreakerConfig(), clock,
                       on_transition=lambda old, new: seen.append((old, new)))
    _trip(b)
    clock.advance(5)
    b.allow()
    b.record(F)
    clock.advance(10)
    b.allow()
    b.record(S)
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                    ("open", "half_open"), ("half_open", "closed")]


def test_hook_may_read_the_breaker() -> None:
    clock = FakeClock()
    states: list[object] = []
    b = CircuitBreaker(BreakerConfig(), clock)
    b.on_transition = lambda old, new: states.append(b.snapshot()["state"])
    _trip(b)
    assert states == ["open"]


def test_snapshot_and_repr() -> None:
    clock = FakeClock()
    b = _breaker(clock)
    _feed(b, S, F)
    snap = b.snapshot()
    assert snap == {"state": "closed", "opened_count": 0, "cooldown_s": 5.0,
                    "retry_in_s": None, "consecutive_failures": 1, "window_requests": 2,
                    "window_failures": 1, "probe_in_flight": False}
    assert repr(b) == "<CircuitBreaker w0 closed failures=1/2 consecutive=1 opened=0>"
    _trip(b)
    clock.advance(2)
    assert b.snapshot()["retry_in_s"] == 3.0
    assert repr(b) == "<CircuitBreaker w0 open cooldown=5s opened=1>"
    clock.advance(3)
    b.allow()
    assert repr(b) == "<CircuitBreaker w0 half_open probe_in_flight=True opened=1>"


def test_permit_records_once_and_releases_probe_on_exit() -> None:
    clock = FakeClock()
    b = _breaker(clock)
    _trip(b)
    clock.advance(5)
    assert b.allow()
    with pytest.raises(asyncio.CancelledError), Permit(b):
        raise asyncio.CancelledError  # client went away before the first byte
    assert _state(b) is State.HALF_OPEN
    assert b.allow()  # the slot was freed for the next probe
    with Permit(b) as permit:
        permit.record(S)
        assert repr(permit) == "<Permit w0 success>"
        permit.record(F)  # e.g. the stream broke later: the first outcome stands
    assert _state(b) is State.CLOSED
    assert b.snapshot()["window_requests"] == 0


def test_breakers_per_worker() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str, str]] = []
    bs = Breakers(BreakerConfig(consecutive_failures=1), clock,
                  on_transition=lambda name, old, new: seen.append((name, old, new)))
    a = bs.get("a")
    assert bs.get("a") is a
    a.record(F)
    assert bs.get("b").state is State.CLOSED
    assert seen == [("a", "closed", "open")]
    assert set(bs.snapshot()) == {"a", "b"}
    assert repr(bs) == "<Breakers 2 workers, 1 not closed>"
    bs.remove("a")
    assert len(bs) == 1
    assert [b.name for b in bs] == ["b"]


def test_forced_open_keeps_the_given_cooldown_then_half_opens_here() -> None:
    """Another hub found the worker failing: open here for its cooldown, then this hub
    probes as usual; a failed probe backs off from that cooldown."""
    clock = FakeClock()
    b = _breaker(clock, cooldown_s=5.0, max_cooldown_s=100.0, backoff=2.0)
    assert b.force_open(20.0)
    assert _state(b) == "open" and b.cooldown_s == 20.0 and b.opened_count == 1
    assert not b.force_open(10.0)  # already open for longer: nothing changes
    clock.advance(19.9)
    assert not b.would_allow()
    clock.advance(0.2)
    assert b.allow() and _state(b) == "half_open"
    b.record(F)
    assert _state(b) == "open" and b.cooldown_s == 40.0
    # a resync: open for what is left of another hub's cooldown
    clock.advance(10.0)
    assert b.force_open(40.0, retry_in_s=100.0)  # capped at the cooldown itself
    assert b.retry_at == pytest.approx(clock.now + 40.0)
    assert b.force_close() and _state(b) == "closed" and b.cooldown_s == 5.0
    assert not b.force_close()


def test_breakers_listeners_hear_every_worker_and_move_to_a_new_set() -> None:
    seen: list[tuple[str, str]] = []
    bs = Breakers(BreakerConfig(consecutive_failures=1), FakeClock())
    bs.listeners.append(lambda name, old, new: seen.append((name, new)))
    bs.get("a").record(F)
    bs.get("b").force_open(3.0)
    assert bs.find("a") is bs.get("a") and bs.find("zz") is None
    replaced = Breakers(BreakerConfig(consecutive_failures=2), listeners=bs.listeners)
    replaced.get("a").force_open(1.0)
    assert seen == [("a", "open"), ("b", "open"), ("a", "open")]


@pytest.mark.parametrize(("status", "outcome"), [
    (200, S), (204, S), (400, IGN), (404, IGN), (429, IGN), (500, F), (502, F), (503, F),
])
def test_outcome_for_status(status: int, outcome: Outcome) -> None:
    assert outcome_for_status(status) is outcome


def test_parse_defaults_and_values() -> None:
    assert parse_breaker(None, "resilience.breaker") == BreakerConfig()
    cfg = parse_breaker({"consecutive_failures": 3, "window_s": 60, "failure_ratio": 1,
                         "cooldown_s": 1.5, "max_cooldown_s": 60, "backoff": 1},
                        "resilience.breaker")
    assert cfg == BreakerConfig(consecutive_failures=3, window_s=60.0, failure_ratio=1.0,
                                cooldown_s=1.5, max_cooldown_s=60.0, backoff=1.0)


@pytest.mark.parametrize(("raw", "message"), [
    ({"consecutive": 3}, "resilience.breaker.consecutive: unknown key"),
    ({"failure_ratio": 1.5}, "resilience.breaker.failure_ratio: must be <= 1"),
    ({"failure_ratio": 0}, "resilience.breaker.failure_ratio: must be > 0"),
    ({"min_requests": 0}, "resilience.breaker.min_requests: must be >= 1"),
    ({"window_s": "30s"}, "resilience.breaker.window_s: must be a number"),
    ({"backoff": 0.5}, "resilience.breaker.backoff: must be >= 1.0"),
    ({"cooldown_s": 10, "max_cooldown_s": 5}, "resilience.breaker.max_cooldown_s: must be >="),
    ([1, 2], "resilience.breaker: must be a mapping"),
])
def test_parse_errors_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_breaker(raw, "resilience.breaker")
