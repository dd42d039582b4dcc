"""The hub's link to Redis: one connection pool, one pub/sub reader, outage tracking.

Redis must never stall a request, so every command has a short socket timeout and
redis-py's own retries are off: a command that fails marks the link down at once and
the caller falls back to local state. One supervisor task owns the connection:

* connect: PING, subscribe every registered channel on a fresh pub/sub connection,
  mark the link up, then run the resync handlers (a hub that was cut off, or has just
  started, reads the fleet state back and re-publishes what changed locally);
* serve: read pub/sub messages and hand each to its channel's handlers (sync, on the
  event loop), and PING every ``ping_every_s`` so a hung server is noticed too;
* on any error (or ``mark_down`` from a part whose command failed): log once, close
  the pub/sub connection, and try again with backoff until Redis answers, then log
  once that it is back.

Start-up never waits for Redis longer than one connect timeout: a hub whose Redis is
down serves from its own state (the agents' state file) and joins when Redis comes.

Channels and keys are both namespaced (``<namespace>:...``), so hubs of one fleet
share a namespace and two fleets can share one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("spokehub.state")

Handler = Callable[[bytes], None]
ResyncHandler = Callable[[], None]
AsyncResyncHandler = Callable[[], Awaitable[None]]

# What a failed Redis call raises: redis-py's errors, the socket's, our own timeouts.
LINK_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def new_hub_id() -> str:
    """This hub process, unique in the fleet: host, pid and a random part (a pid is
    reused after a restart, and two containers may share a host name)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RedisLink:
    """A :class:`hub.state.link.SharedLink` over redis-py's asyncio client."""

    def __init__(self, url: str, namespace: str, *, hub_id: str | None = None,
                 timeout_s: float = 0.5, ping_every_s: float = 1.0,
                 backoff_s: tuple[float, float] = (0.1, 1.0),
                 rng: random.Random | None = None) -> None:
        self.namespace = namespace
        self._hub_id = hub_id or new_hub_id()
        self.timeout_s = timeout_s
        self.ping_every_s = ping_every_s
        self.backoff_s = backoff_s
        self._rng = rng or random.Random()
        self._client: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
            client_name=f"spokehub:{self._hub_id}"[:120])
        self._up = False
        self._ever_up = False
        self._down_logged = False
        self._kick = asyncio.Event()  # mark_down: drop the connection and reconnect
        self._handlers: dict[str, list[Handler]] = {}
        self._resync: list[ResyncHandler] = []
        self._resync_async: list[AsyncResyncHandler] = []
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.first_attempt = asyncio.Event()  # set once the first connect has been tried
        # counters for the metrics
        self.published: Counter[str] = Counter()  # channel -> messages sent
        self.received: Counter[str] = Counter()  # channel -> messages handled
        self.dropped: Counter[str] = Counter()  # channel -> not sent: the link was down
        self.resyncs = 0
        self.outages = 0
        self.last_error = ""

    # -- the SharedLink interface ------------------------------------------------------
    @property
    def client(self) -> Redis:
        return self._client

    @property
    def up(self) -> bool:
        return self._up

    @property
    def hub_id(self) -> str:
        return self._hub_id

    def key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def channel(self, name: str) -> str:
        """The Redis channel behind ``name`` (namespaced like keys)."""
        return self.key("ch", name)

    def mark_down(self, exc: BaseException) -> None:
        """A command failed: stop using Redis until the supervisor reconnects."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._up:
            self._up = False
            self.outages += 1
        if not self._down_logged:
            self._down_logged = True
            log.error("shared state: Redis is unreachable (%s); serving from local "
                      "state until it is back", self.last_error)
        self._kick.set()

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every hub; never raises. While the link is down it is
        dropped (the resync after the outage carries the state instead)."""
        if not self._up:
            self.dropped[channel] += 1
            return
        try:
            await self._client.publish(self.channel(channel), payload)
        except LINK_ERRORS as exc:
            self.dropped[channel] += 1
            self.mark_down(exc)
            return
        self.published[channel] += 1

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(payload)`` for every message on ``channel``, from this hub too
        (a handler that must skip its own hub's messages checks a hub id inside)."""
        new = channel not in self._handlers
        self._handlers.setdefault(channel, []).append(handler)
        if new and self._pubsub is not None and self._up:
            self._kick.set()  # resubscribe everything on a fresh connection, then resync

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync.append(handler)

    # -- extra members -----------------------------------------------------------------
    def on_resync_async(self, handler: AsyncResyncHandler) -> None:
        """An awaited resync step (reads Redis), run after the sync handlers."""
        self._resync_async.append(handler)

    def count_published(self, channel: str) -> None:
        """A part published on ``channel`` itself (in a pipeline with its write)."""
        self.published[channel] += 1

    async def write_and_publish(self, channel: str, write: Callable[[Any], object],
                                *bodies: bytes) -> bool:
        """Write to the store (``write(pipeline)``) and publish ``bodies`` on
        ``channel``, in one round trip; never raises. False: not done (counted as
        dropped, and the link is marked down)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            write(pipe)
            for body in bodies:
                pipe.publish(self.channel(channel), body)
            await pipe.execute()
        except LINK_ERRORS as exc:
            self.dropped[channel] += 1
            self.mark_down(exc)
            return False
        self.published[channel] += len(bodies)
        return True

    def count_dropped(self, channel: str) -> None:
        """A part had something for ``channel`` while the link was down (the resync
        after the outage carries the state instead)."""
        self.dropped[channel] += 1

    async def start(self, wait_s: float | None = None) -> None:
        """Start the supervisor; wait at most ``wait_s`` (default: one connect timeout
        and a resync) for the first connect, so a hub whose Redis is up starts with the
        fleet state and one whose Redis is down starts anyway."""
        self._task = asyncio.create_task(self._supervise(), name="spokehub-state-link")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s if wait_s is not None else
                                       self.timeout_s * 4 + 1.0):
                await self.first_attempt.wait()

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_pubsub()
        self._up = False
        await self._client.aclose()

    # -- the supervisor ----------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = self.backoff_s[0]
        while not self._stopping:
            resubscribe = False
            try:
                await self._connect()
                delay = self.backoff_s[0]
                resubscribe = await self._serve()
            except asyncio.CancelledError:
                raise
            except LINK_ERRORS as exc:
                if not self._stopping:
                    self.mark_down(exc)
            except Exception as exc:  # a bug in a handler must not end the link
                log.exception("shared state: link error")
                self.mark_down(exc)
            finally:
                self.first_attempt.set()
            self._up = False
            await self._close_pubsub()
            if self._stopping:
                return
            if resubscribe:
                continue
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, self.backoff_s[1])

    async def _connect(self) -> None:
        self._kick.clear()
        # Connections pooled before an outage are dead; with retries off, the first
        # command on one would fail and end this connect. Start from an empty pool.
        await self._client.connection_pool.disconnect()
        async with asyncio.timeout(self.timeout_s * 2):
            await self._client.ping()
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        channels = [self.channel(c) for c in self._handlers]
        if channels:
            async with asyncio.timeout(self.timeout_s * 2):
                await pubsub.subscribe(*channels)
        first = not self._ever_up
        self._up = True
        self._ever_up = True
        self._kick.clear()
        await self._run_resync()
        if self._down_logged:  # logged once when it went down, once now
            log.warning("shared state: Redis is back; resynced with it")
        elif first:
            log.info("shared state: connected to Redis (namespace %s, hub %s)",
                     self.namespace, self._hub_id)
        self._down_logged = False
        self.first_attempt.set()

    async def _run_resync(self) -> None:
        for handler in list(self._resync):
            try:
                handler()
            except Exception:
                log.exception("shared state: a resync handler failed")
        for step in list(self._resync_async):
            try:
                await step()  # a link error here ends this connection: resync again later
            except LINK_ERRORS:
                raise
            except Exception:  # a bug in one part must not keep the link down
                log.exception("shared state: a resync step failed")
            if not self._up:
                raise ConnectionError(self.last_error or "Redis went away during resync")
        self.resyncs += 1

    async def _serve(self) -> bool:
        """Read messages until kicked; True if kicked by a new subscription (reconnect
        at once, no backoff), else raises."""
        pubsub = self._pubsub
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_every_s
        prefix = self.key("ch", "")
        while not self._kick.is_set():
            if self._handlers:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=min(0.25, self.ping_every_s))
                if message is not None:
                    self._dispatch(message, prefix)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await self._kick.wait()
            if loop.time() >= next_ping:
                async with asyncio.timeout(self.timeout_s * 2):
                    await self._client.ping()
                next_ping = loop.time() + self.ping_every_s
        if not self._stopping and self._up:  # kicked by a new subscription: reconnect now
            return True
        raise ConnectionError(self.last_error or "link marked down")

    def _dispatch(self, message: dict[str, Any], prefix: str) -> None:
        raw = message.get("channel")
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        channel = name.removeprefix(prefix)
        data = message.get("data")
        if not isinstance(data, bytes):
            return
        self.received[channel] += 1
        for handler in list(self._handlers.get(channel, ())):
            try:
                handler(data)
            except Exception:
                log.exception("shared state: handler for %s failed", channel)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*LINK_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"<RedisLink {self.namespace} {'up' if self._up else 'down'} {self._hub_id}>"
