"""UTC windows: the hour a usage row is filed under, and the day and month a budget
counts. Budgets reset at 00:00 UTC (daily) and on the 1st at 00:00 UTC (monthly),
whatever the hub's local time zone, so every hub of a fleet agrees.

Times are Unix seconds (``time.time()``); POSIX time has no leap seconds, so a UTC day
is exactly 86400 of them and an hour's start is a multiple of 3600.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

HOUR = 3600
DAY = 86400
WINDOWS = ("daily", "monthly")


def hour_start(now: float) -> int:
    t = int(now)
    return t - t % HOUR


def day_start(now: float) -> int:
    t = int(now)
    return t - t % DAY


def month_start(now: float) -> int:
    tm = time.gmtime(now)
    return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))


def next_month_start(now: float) -> int:
    tm = time.gmtime(now)
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


@dataclass(frozen=True, slots=True)
class Windows:
    """The day and month ``now`` falls in, and when each ends."""

    day: int
    month: int
    day_end: int
    month_end: int

    @classmethod
    def at(cls, now: float) -> Windows:
        day = day_start(now)
        return cls(day=day, month=month_start(now), day_end=day + DAY,
                   month_end=next_month_start(now))

    def contains(self, now: float) -> bool:
        return self.day <= now < self.day_end

    def end(self, window: str) -> int:
        return self.day_end if window == "daily" else self.month_end

    def label(self, window: str) -> str:
        """``2026-11-30`` (daily) or ``2026-11`` (monthly)."""
        fmt = "%Y-%m-%d" if window == "daily" else "%Y-%m"
        return time.strftime(fmt, time.gmtime(self.day if window == "daily" else self.month))
