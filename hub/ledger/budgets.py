"""The ``budgets:`` section and the verdict on a tenant's usage: ok, soft or hard.

::

    budgets:
      default:                  # every tenant without an entry of its own (none: unlimited)
        monthly_cost: 50.0
      tenants:
        acme:                   # replaces the default for acme (no merging of keys)
          daily_tokens: 2000000   # prompt + completion tokens, UTC day
          monthly_tokens: null
          daily_cost: null        # in the currency of ``prices:``
          monthly_cost: 100.0
          soft_ratio: 0.8         # soft limit: this share of any limit (logged, metric)
          on_hard: no_spill       # no_spill: local workers still serve, no spill-over to
                                  # the fallback tier | reject: 429 insufficient_quota

A limit is reached when usage is at or above it; the request that crosses it is still
served (its size is only known after it), later ones are not. Pure: totals and limits
in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from hub.config.kit import ConfigError, Section

ON_HARD = ("no_spill", "reject")
KINDS = ("tokens", "cost")


class State(IntEnum):
    OK = 0
    SOFT = 1
    HARD = 2


@dataclass(frozen=True, slots=True)
class Budget:
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    daily_cost: float | None = None
    monthly_cost: float | None = None
    soft_ratio: float = 0.8
    on_hard: str = "no_spill"

    _limits: tuple[tuple[str, str, float], ...] = field(init=False, repr=False,
                                                        compare=False, default=())

    def __post_init__(self) -> None:
        limits = []
        for window, kind, value in (("daily", "tokens", self.daily_tokens),
                                    ("monthly", "tokens", self.monthly_tokens),
                                    ("daily", "cost", self.daily_cost),
                                    ("monthly", "cost", self.monthly_cost)):
            if value is not None:
                limits.append((window, kind, float(value)))
        object.__setattr__(self, "_limits", tuple(limits))

    @property
    def unlimited(self) -> bool:
        return not self._limits

    def limits(self) -> tuple[tuple[str, str, float], ...]:
        """(window, kind, limit) of every limit set."""
        return self._limits


UNLIMITED = Budget()


class Used(NamedTuple):
    """A tenant's usage in one window (a tuple: made on every request, cheaply)."""

    tokens: int = 0
    cost: float = 0.0

    def of(self, kind: str) -> float:
        return float(self.tokens) if kind == "tokens" else self.cost


NOTHING = Used()


class Verdict(NamedTuple):
    state: State
    window: str | None = None  # the window and kind of the worst limit
    kind: str | None = None


OK = Verdict(State.OK)
_OK, _SOFT, _HARD = State.OK, State.SOFT, State.HARD  # plain names: no enum lookups


def judge(budget: Budget, daily: Used, monthly: Used) -> Verdict:
    """The budget's verdict on a tenant's usage today and this month: the worst limit
    wins (hard over soft; a monthly limit over a daily one at the same state, since it
    lasts longer). Runs on every request with a budget: kept to plain comparisons."""
    state = _OK
    where: tuple[str, str] | None = None
    soft_ratio = budget.soft_ratio
    for window, kind, limit in budget._limits:
        used = (daily if window == "daily" else monthly)
        value = used.tokens if kind == "tokens" else used.cost
        if value >= limit:
            s = _HARD
        elif value >= limit * soft_ratio:
            s = _SOFT
        else:
            continue
        if s > state or (s == state and window == "monthly"):
            state, where = s, (window, kind)
    return OK if where is None else Verdict(state, where[0], where[1])


def ratios(budget: Budget, daily: Used, monthly: Used) -> list[tuple[str, str, float]]:
    """(window, kind, used / limit) of every limit set (for the metric)."""
    out = []
    for window, kind, limit in budget._limits:
        used = (daily if window == "daily" else monthly).of(kind)
        out.append((window, kind, used / limit if limit > 0 else (1.0 if used > 0 else 0.0)))
    return out


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    default: Budget = UNLIMITED
    tenants: Mapping[str, Budget] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> Budget:
        return self.tenants.get(tenant, self.default)

    @property
    def any(self) -> bool:
        return not self.default.unlimited or any(not b.unlimited for b in self.tenants.values())


def _opt_int(s: Section, key: str) -> int | None:
    return None if s.get(key) is None else s.integer(key, 0, lo=0)


def _opt_num(s: Section, key: str) -> float | None:
    return None if s.get(key) is None else s.number(key, 0.0, exclusive_lo=False)


def parse_budget(raw: object, path: str) -> Budget:
    s = Section(raw, path)
    ratio = s.number("soft_ratio", 0.8)
    if ratio > 1.0:
        raise ConfigError(f"{s.key('soft_ratio')}: must be between 0 and 1, got {ratio}")
    out = Budget(daily_tokens=_opt_int(s, "daily_tokens"),
                 monthly_tokens=_opt_int(s, "monthly_tokens"),
                 daily_cost=_opt_num(s, "daily_cost"),
                 monthly_cost=_opt_num(s, "monthly_cost"),
                 soft_ratio=ratio,
                 on_hard=s.text("on_hard", "no_spill", choices=ON_HARD))
    s.done()
    return out


def parse_budgets(raw: object, path: str = "budgets") -> BudgetsConfig:
    s = Section(raw, path)
    default = UNLIMITED if s.get("default") is None else \
        parse_budget(s.get("default"), s.key("default"))
    t = s.section("tenants")
    tenants: dict[str, Budget] = {}
    for name in list(t.data):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{t.path}: tenant names must be non-empty strings")
        tenants[name] = parse_budget(t.get(name), t.key(name))
    s.done()
    return BudgetsConfig(default, tenants)
