"""In-flight counts shared by two hubs through a real redis-server: together they
respect a worker's ``max_concurrency`` (two registries = two hubs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from hub.config.workers import WorkerSpec
from hub.fleet.registry import Registry
from hub.state.inflight import CHANNEL, InflightShare
from tests.state.limits_support import redis_server, two_links
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

__all__ = ["redis_server", "two_links"]  # fixtures

Links = tuple[LinkForTests, LinkForTests]
SPECS = [WorkerSpec("capped", "http://127.0.0.1:9", models=("m",), max_concurrency=2),
         WorkerSpec("free", "http://127.0.0.1:9", models=("n",))]


def registry() -> Registry:
    reg = Registry(SPECS)
    for w in reg:
        w.healthy = True
    return reg


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def slots(reg: Registry, name: str, n: int, stack: ExitStack) -> None:
    worker = reg.get(name)
    assert worker is not None
    for _ in range(n):
        stack.enter_context(worker.in_flight_slot())


def remote(reg: Registry, name: str = "capped") -> int:
    w = reg.get(name)
    assert w is not None
    return w.remote_in_flight


async def test_two_hubs_respect_max_concurrency_together(two_links: Links) -> None:
    link_a, link_b = two_links
    reg_a, reg_b = registry(), registry()
    woken: list[int] = []
    share_a = InflightShare(link_a, lambda: reg_a)
    share_b = InflightShare(link_b, lambda: reg_b, on_room=woken.append)
    await link_a.start()
    await link_b.start()
    share_a.start()
    share_b.start()
    try:
        with ExitStack() as held:
            slots(reg_a, "capped", 2, held)  # hub A fills the worker
            slots(reg_a, "free", 3, held)  # no max_concurrency: not shared
            await until(lambda: remote(reg_b) == 2, "hub B to see hub A's requests")
            assert reg_b.saturated("m")
            assert reg_b.candidates("m") == []
            assert remote(reg_b, "free") == 0
            assert not reg_b.saturated("n")
            assert remote(reg_a) == 0  # a hub does not count its own requests twice
            with ExitStack() as one:
                slots(reg_b, "capped", 1, one)
                await until(lambda: remote(reg_a) == 1, "hub A to see hub B's request")
            held.close()
            await until(lambda: remote(reg_b) == 0, "hub A's requests to end at B")
        assert not reg_b.saturated("m")
        assert sum(woken) == 2  # B's capacity queue was woken for both slots
    finally:
        await share_a.aclose()
        await share_b.aclose()


async def test_a_silent_hubs_counts_expire(two_links: Links) -> None:
    link_a, link_b = two_links
    reg_b = registry()
    share_b = InflightShare(link_b, lambda: reg_b, expire_s=0.5)
    await link_a.start()
    await link_b.start()
    share_b.start()
    try:
        # a hub that published once and went silent (crashed)
        await link_a.publish(CHANNEL, json.dumps({"hub": "gone", "n": {"capped": 2}}).encode())
        await until(lambda: remote(reg_b) == 2, "the message")
        assert reg_b.saturated("m")
        await until(lambda: remote(reg_b) == 0, "the silent hub's counts to expire")
        assert not reg_b.saturated("m")
        # a malformed message is ignored
        await link_a.publish(CHANNEL, b"{not json")
        await link_a.publish(CHANNEL, json.dumps({"hub": "x", "n": {"capped": 1}}).encode())
        await until(lambda: remote(reg_b) == 1, "the next good message")
    finally:
        await share_b.aclose()


async def test_heartbeats_keep_counts_alive(two_links: Links) -> None:
    link_a, link_b = two_links
    reg_a, reg_b = registry(), registry()
    share_a = InflightShare(link_a, lambda: reg_a, heartbeat_s=0.1)
    share_b = InflightShare(link_b, lambda: reg_b, expire_s=0.5)
    await link_a.start()
    await link_b.start()
    share_a.start()
    share_b.start()
    try:
        with ExitStack() as held:
            slots(reg_a, "capped", 1, held)
            await until(lambda: remote(reg_b) == 1, "hub A's request")
            seen = share_b.received
            # several expiry periods pass: heartbeats keep the unchanged count
            await until(lambda: share_b.received >= seen + 15, "heartbeats")
            assert remote(reg_b) == 1
    finally:
        await share_a.aclose()
        await share_b.aclose()
    assert remote(reg_b) == 0


async def test_redis_outage_falls_back_to_local_counts(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    link_a = LinkForTests(server.url, "hub-a", "io")
    link_b = LinkForTests(server.url, "hub-b", "io")
    reg_a, reg_b = registry(), registry()
    share_a = InflightShare(link_a, lambda: reg_a)
    share_b = InflightShare(link_b, lambda: reg_b, expire_s=0.5)
    await link_a.start()
    await link_b.start()
    share_a.start()
    share_b.start()
    try:
        with ExitStack() as held:
            slots(reg_a, "capped", 2, held)
            await until(lambda: remote(reg_b) == 2, "hub A's requests")
            server.kill()
            # no news from A: its counts expire and B limits with its own count only
            await until(lambda: remote(reg_b) == 0, "fail open")
            assert not reg_b.saturated("m")
            server.start()
            await until(lambda: link_a.up and link_b.up, "the links to come back")
            # after the resync A publishes again and B counts its requests once more
            await until(lambda: remote(reg_b) == 2, "hub A's counts after the outage")
    finally:
        await share_a.aclose()
        await share_b.aclose()
        await link_a.aclose()
        await link_b.aclose()
        server.kill()
