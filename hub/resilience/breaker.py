"""Per-worker circuit breaker: stop sending to a worker that keeps failing, then probe it.

States and transitions:

* ``closed``: every request is allowed. Opens after ``consecutive_failures`` failures in a
  row, or when failures are at least ``failure_ratio`` of the outcomes recorded over the
  last ``window_s`` seconds (counting only once there are ``min_requests`` of them).
* ``open``: nothing is allowed until ``retry_at``. The first ``allow()`` after that moves
  to ``half_open`` and is admitted as the probe.
* ``half_open``: exactly one request (the probe) is in flight; everyone else is refused.
  The probe's success closes the breaker and resets the cooldown; its failure re-opens it
  with the cooldown multiplied by ``backoff`` (capped at ``max_cooldown_s``). An ignored
  outcome frees the probe slot so the next request probes instead.

Outcomes that say nothing about the worker (client cancel, client 4xx, the hub's own rate
limiting) are recorded as ``IGNORED`` and never move the breaker.

Decisions are sync and take a lock around a compare-and-set on the probe flag, so
"exactly one probe" holds for threads as well as for tasks on one event loop. Transition
callbacks run after the lock is released, so they may read the breaker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import TracebackType

from hub.config.kit import ConfigError, Section

Clock = Callable[[], float]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(Enum):
    """What one upstream attempt says about the worker's health."""

    SUCCESS = "success"  # first byte arrived, or a complete non-5xx response
    FAILURE = "failure"  # connect error, timeout, upstream 5xx
    IGNORED = "ignored"  # client cancel, client 4xx, hub rate limiting: not the worker's doing


def outcome_for_status(status: int) -> Outcome:
    """Classify an upstream HTTP status: 5xx is the worker's fault, 4xx the request's."""
    if status >= 500:
        return Outcome.FAILURE
    if status >= 400:
        return Outcome.IGNORED
    return Outcome.SUCCESS


TransitionHook = Callable[[State, State], None]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    consecutive_failures: int = 5  # 0 disables the consecutive-failure trigger
    window_s: float = 30.0
    min_requests: int = 10
    failure_ratio: float = 0.5
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0
    backoff: float = 2.0


class CircuitBreaker:
    def __init__(self, cfg: BreakerConfig, clock: Clock = time.monotonic, *, name: str = "",
                 on_transition: TransitionHook | None = None) -> None:
        self.cfg = cfg
        self.name = name
        self.on_transition = on_transition
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._window: deque[tuple[float, bool]] = deque()  # (when, failed)
        self._window_failures = 0
        self._consecutive = 0
        self._cooldown = cfg.cooldown_s
        self._retry_at: float | None = None
        self._probe_in_flight = False
        self._opened_count = 0

    # -- reads -----------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def opened_count(self) -> int:
        """How many times the breaker has opened (from closed or from half-open)."""
        return self._opened_count

    @property
    def retry_at(self) -> float | None:
        """Clock time from which an open breaker admits a probe; None unless open."""
        return self._retry_at

    @property
    def cooldown_s(self) -> float:
        """The cooldown the next opening will use (grows on failed probes)."""
        return self._cooldown

    def would_allow(self) -> bool:
        """What ``allow()`` would answer now, without taking the probe slot.

        Use this to filter candidates; call ``allow()`` only on the worker actually picked,
        or an unused probe slot would keep the breaker half-open forever.
        """
        with self._lock:
            if self._state is State.CLOSED:
                return True
            if self._state is State.OPEN:
                return self._retry_at is not None and self._clock() >= self._retry_at
            return not self._probe_in_flight

    def snapshot(self) -> dict[str, object]:
        """JSON-ready view for the status endpoint."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            retry_in = None if self._retry_at is None else max(0.0, self._retry_at - now)
            return {
                "state": str(self._state),
                "opened_count": self._opened_count,
                "cooldown_s": self._cooldown,
                "retry_in_s": retry_in,
                "consecutive_failures": self._consecutive,
                "window_requests": len(self._window),
                "window_failures": self._window_failures,
                "probe_in_flight": self._probe_in_flight,
            }

    # -- decisions -------------------------------------------------------------
    def allow(self) -> bool:
        """May a request go to this worker now? Half-open admits exactly one probe."""
        changes: list[tuple[State, State]] = []
        with self._lock:
            if self._state is State.CLOSED:
                return True
            if self._state is State.OPEN:
                if self._retry_at is None or self._clock() < self._retry_at:
                    return False
                self._move(State.HALF_OPEN, changes)
            if self._probe_in_flight:
                allowed = False
            else:
                self._probe_in_flight = True
                allowed = True
        self._notify(changes)
        return allowed

    def record(self, outcome: Outcome) -> None:
        """Feed one attempt's outcome. Outcomes arriving while open are dropped."""
        changes: list[tuple[State, State]] = []
        with self._lock:
            if self._state is State.CLOSED:
                if outcome is not Outcome.IGNORED:
                    self._observe(outcome is Outcome.FAILURE, changes)
            elif self._state is State.HALF_OPEN:
                if outcome is Outcome.IGNORED:
                    self._probe_in_flight = False
                elif outcome is Outcome.SUCCESS:
                    self._close(changes)
                else:
                    self._cooldown = min(self._cooldown * self.cfg.backoff,
                                         self.cfg.max_cooldown_s)
                    self._open(changes)
        self._notify(changes)

    def force_open(self, cooldown_s: float, retry_in_s: float | None = None) -> bool:
        """Open now because another hub found the worker failing: no traffic for
        ``retry_in_s`` (default ``cooldown_s``), then half-open here as usual, with
        ``cooldown_s`` as the cooldown the next failed probe grows from. Returns False
        if already open at least that long."""
        changes: list[tuple[State, State]] = []
        with self._lock:
            cooldown = min(max(cooldown_s, 0.0), self.cfg.max_cooldown_s)
            retry_at = self._clock() + (cooldown if retry_in_s is None
                                        else min(max(retry_in_s, 0.0), cooldown))
            if (self._state is State.OPEN and self._retry_at is not None
                    and self._retry_at >= retry_at):
                return False
            self._cooldown = cooldown
            self._open(changes)
            self._retry_at = retry_at
        self._notify(changes)
        return True

    def force_close(self) -> bool:
        """Close now because another hub's probe succeeded; False if already closed."""
        changes: list[tuple[State, State]] = []
        with self._lock:
            if self._state is State.CLOSED:
                return False
            self._close(changes)
        self._notify(changes)
        return True

    # -- internals (lock held) -------------------------------------------------
    def _observe(self, failed: bool, changes: list[tuple[State, State]]) -> None:
        now = self._clock()
        self._expire(now)
        self._window.append((now, failed))
        if not failed:
            self._consecutive = 0
            return
        self._window_failures += 1
        self._consecutive += 1
        cfg = self.cfg
        by_streak = 0 < cfg.consecutive_failures <= self._consecutive
        total = len(self._window)
        by_ratio = (total >= cfg.min_requests
                    and self._window_failures >= cfg.failure_ratio * total)
        if by_streak or by_ratio:
            self._open(changes)

    def _expire(self, now: float) -> None:
        horizon = now - self.cfg.window_s
        window = self._window
        while window and window[0][0] <= horizon:
            _, failed = window.popleft()
            self._window_failures -= failed

    def _reset_counts(self) -> None:
        self._window.clear()
        self._window_failures = 0
        self._consecutive = 0

    def _open(self, changes: list[tuple[State, State]]) -> None:
        self._reset_counts()
        self._probe_in_flight = False
        self._retry_at = self._clock() + self._cooldown
        self._opened_count += 1
        self._move(State.OPEN, changes)

    def _close(self, changes: list[tuple[State, State]]) -> None:
        self._reset_counts()
        self._probe_in_flight = False
        self._retry_at = None
        self._cooldown = self.cfg.cooldown_s
        self._move(State.CLOSED, changes)

    def _move(self, new: State, changes: list[tuple[State, State]]) -> None:
        changes.append((self._state, new))
        self._state = new

    def _notify(self, changes: list[tuple[State, State]]) -> None:
        hook = self.on_transition
        if hook is not None:
            for old, new in changes:
                hook(old, new)

    def __repr__(self) -> str:
        label = f" {self.name}" if self.name else ""
        extra = ""
        if self._state is State.CLOSED:
            extra = (f" failures={self._window_failures}/{len(self._window)}"
                     f" consecutive={self._consecutive}")
        elif self._state is State.OPEN:
            extra = f" cooldown={self._cooldown:g}s"
        else:
            extra = f" probe_in_flight={self._probe_in_flight}"
        return f"<CircuitBreaker{label} {self._state}{extra} opened={self._opened_count}>"


class Permit:
    """One admitted request's outcome, recorded exactly once.

    Take it right after ``allow()`` returned True. The first ``record()`` counts and later
    ones are dropped (a stream that succeeded at its first byte and broke later still
    counts as a success); leaving the block without one records ``IGNORED``, so a
    request cancelled or rejected before reaching the worker never keeps the half-open
    probe slot.
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.outcome: Outcome | None = None

    def record(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.breaker.record(outcome)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.record(Outcome.IGNORED)

    def __repr__(self) -> str:
        outcome = "pending" if self.outcome is None else self.outcome.value
        return f"<Permit {self.breaker.name or '-'} {outcome}>"


class Breakers:
    """One breaker per worker name, created on first use with the shared config."""

    def __init__(self, cfg: BreakerConfig, clock: Clock = time.monotonic, *,
                 on_transition: Callable[[str, State, State], None] | None = None,
                 listeners: list[Callable[[str, State, State], None]] | None = None) -> None:
        self.cfg = cfg
        self._clock = clock
        self._on_transition = on_transition
        # More transition hooks (e.g. sharing them with other hubs); pass the old set's
        # list when replacing a Breakers so they keep listening.
        self.listeners: list[Callable[[str, State, State], None]] = (
            listeners if listeners is not None else [])
        self._by_name: dict[str, CircuitBreaker] = {}

    def _hook(self, name: str, old: State, new: State) -> None:
        if self._on_transition is not None:
            self._on_transition(name, old, new)
        for listener in list(self.listeners):
            listener(name, old, new)

    def find(self, name: str) -> CircuitBreaker | None:
        """The worker's breaker if it has one (no new one made)."""
        return self._by_name.get(name)

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._by_name.get(name)
        if breaker is None:
            breaker = CircuitBreaker(self.cfg, self._clock, name=name,
                                     on_transition=_bind_name(self._hook, name))
            self._by_name[name] = breaker
        return breaker

    def remove(self, name: str) -> None:
        self._by_name.pop(name, None)

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {name: b.snapshot() for name, b in self._by_name.items()}

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        not_closed = sum(b.state is not State.CLOSED for b in self._by_name.values())
        return f"<Breakers {len(self._by_name)} workers, {not_closed} not closed>"


def _bind_name(hook: Callable[[str, State, State], None], name: str) -> TransitionHook:
    def bound(old: State, new: State) -> None:
        hook(name, old, new)
    return bound


def parse_breaker(raw: object, path: str) -> BreakerConfig:
    """Parse the ``breaker`` mapping (None means all defaults); errors name the key."""

    s = Section(raw, path)
    d = BreakerConfig()
    cfg = BreakerConfig(
        consecutive_failures=s.integer("consecutive_failures", d.consecutive_failures, lo=0),
        window_s=s.number("window_s", d.window_s),
        min_requests=s.integer("min_requests", d.min_requests, lo=1),
        failure_ratio=s.number("failure_ratio", d.failure_ratio),
        cooldown_s=s.number("cooldown_s", d.cooldown_s),
        max_cooldown_s=s.number("max_cooldown_s", d.max_cooldown_s),
        backoff=s.number("backoff", d.backoff, lo=1.0, exclusive_lo=False),
    )
    s.done()
    prefix = f"{path}." if path else ""
    if cfg.failure_ratio > 1.0:
        raise ConfigError(f"{prefix}failure_ratio: must be <= 1, got {cfg.failure_ratio}")
    if cfg.max_cooldown_s < cfg.cooldown_s:
        raise ConfigError(f"{prefix}max_cooldown_s: must be >= cooldown_s "
                          f"({cfg.cooldown_s}), got {cfg.max_cooldown_s}")
    return cfg
