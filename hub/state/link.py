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

    Channels are short names (``"agents"``, ``"drain"``); the link namespaces them as it
    does keys. ``publish`` never raises (while down it drops the message: the resync
    after the outage carries the state). Handlers run on the event loop and get every
    message, this hub's own included. Resync handlers run after each (re)connect,
    once the link is up and every channel is subscribed again.
    Implemented by :class:`hub.state.redis_link.RedisLink`.
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
