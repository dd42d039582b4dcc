"""A small concrete ``SharedLink`` for tests of the parts that use one: a redis.asyncio
client, a pub/sub reader task, and a reconnect loop that PINGs until Redis is back and
then runs the resync handlers. Like the hub's link, channels are namespaced and a hub
receives its own messages too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class LinkForTests:
    def __init__(self, url: str, hub_id: str, namespace: str = "t") -> None:
        self.namespace = namespace
        self._hub_id = hub_id
        self._client: Redis = Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False)
        self._up = False
        self._handlers: dict[str, list[Callable[[bytes], None]]] = {}
        self._resync: list[Callable[[], None]] = []
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self.downs = 0

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

    def mark_down(self, exc: BaseException) -> None:
        if self._up:
            self.downs += 1
        self._up = False
        self._kick.set()

    async def publish(self, channel: str, payload: bytes) -> None:
        if not self._up:
            return
        try:
            await self._client.publish(self.key("ch", channel), payload)
        except ERRORS as exc:
            self.mark_down(exc)

    def subscribe(self, channel: str, handler: Callable[[bytes], None]) -> None:
        self._handlers.setdefault(channel, []).append(handler)
        self._kick.set()  # resubscribe on a fresh connection

    def on_resync(self, handler: Callable[[], None]) -> None:
        self._resync.append(handler)

    async def start(self) -> LinkForTests:
        self._task = asyncio.get_running_loop().create_task(self._run())
        for _ in range(600):
            if self._up:
                return self
            await asyncio.sleep(0.05)
        raise TimeoutError("redis not reachable")

    async def _connect(self) -> None:
        await self._client.ping()
        pubsub = self._client.pubsub()
        channels = [self.key("ch", c) for c in self._handlers]
        if channels:
            await pubsub.subscribe(*channels)
        self._pubsub = pubsub
        self._kick.clear()
        self._up = True
        for handler in self._resync:
            handler()

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while True:
            try:
                await self._connect()
                while not self._kick.is_set():
                    assert self._pubsub is not None
                    if not self._pubsub.subscribed:
                        await asyncio.sleep(0.02)
                        continue
                    msg = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                         timeout=0.05)
                    if msg is None or msg.get("type") != "message":
                        continue
                    channel = msg["channel"].decode()[len(self.key("ch")) + 1:]
                    for handler in self._handlers.get(channel, []):
                        handler(msg["data"])
            except ERRORS as exc:
                self.mark_down(exc)
            self._up = False
            await self._drop()
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()
        await self._client.aclose()
