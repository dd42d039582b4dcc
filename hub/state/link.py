"""What shared-state parts need from the hubs' Redis link: the interface between the
link (connection, outage tracking, pub/sub) and the parts that use it (agent workers,
breakers, rate limits, in-flight counts, prefix map)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis


class SharedLink(Protocol):
    """One hub's link to the shared store.

    ``up`` is False from the first failed command until a reconnect succeeds; a part
    that finds Redis down falls back to local state and calls ``mark_down``.
    """

    @property
    def client(self) -> Redis: ...

    @property
    def up(self) -> bool: ...

    @property
    def hub_id(self) -> str: ...  # this hub process, unique in the fleet

    def key(self, *parts: str) -> str: ...  # "<namespace>:<part>:<part>..."

    def mark_down(self, exc: BaseException) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> None: ...

    def subscribe(self, channel: str, handler: Callable[[bytes], None]) -> None: ...

    def on_resync(self, handler: Callable[[], None]) -> None: ...  # after Redis came back
