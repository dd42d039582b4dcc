"""Which hub the agent heartbeats to, among several (``hub_urls``).

The agent talks to one hub at a time (sticky: its workers' state lands in one place
and logs stay quiet). When that hub is unavailable (connection error, timeout, 5xx)
it fails over to the next URL at once; only when every hub failed in one round does
the caller back off (and the next round starts where this one stopped). Hubs that
share state (Redis) all accept the heartbeat, so any of them routes to the agent's
workers.

After ``failback_s`` away from the first (preferred) URL, the next heartbeat tries it
again, so a fleet's agents drift back to the order the operator wrote once the
preferred hub is back; if it still fails, the agent moves on at once, as on any
failure. Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Switch:
    """One change of hub, to log: ``reason`` is "failover" or "failback"."""

    old: int
    new: int
    reason: str


class HubChooser:
    def __init__(self, count: int, failback_s: float) -> None:
        if count < 1:
            raise ValueError("at least one hub URL")
        self.count = count
        self.failback_s = failback_s
        self.index = 0
        self._left_preferred_at: float | None = None

    def before_attempt(self, now: float) -> Switch | None:
        """Go back to the preferred hub if we have been away from it long enough."""
        if self.index == 0 or self._left_preferred_at is None:
            return None
        if now - self._left_preferred_at < self.failback_s:
            return None
        old, self.index = self.index, 0
        self._left_preferred_at = None
        return Switch(old, 0, "failback")

    def failed(self, now: float) -> Switch | None:
        """The current hub was unavailable: move to the next one (if there is one)."""
        if self.count == 1:
            return None
        old = self.index
        self.index = (old + 1) % self.count
        if self.index == 0:
            self._left_preferred_at = None
        elif old == 0:
            self._left_preferred_at = now
        return Switch(old, self.index, "failover")
