"""RedisLink against a real redis-server: pub/sub between hubs, namespacing, and what
an outage does (marked down, nothing raises, resync handlers run when Redis is back)."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path

from hub.state.redis_link import RedisLink
from tests.state.conftest import eventually
from tests.support.procs import free_port
from tests.support.redis_proc import RedisServer


def link(url: str, namespace: str, hub_id: str) -> RedisLink:
    return RedisLink(url, namespace, hub_id=hub_id, backoff_s=(0.05, 0.3))


async def test_messages_reach_every_hub_of_the_namespace_only(
        redis_server: RedisServer) -> None:
    ns = f"t{secrets.token_hex(4)}"
    a, b = link(redis_server.url, ns, "a"), link(redis_server.url, ns, "b")
    other = link(redis_server.url, ns + "x", "c")
    got: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
    a.subscribe("news", got["a"].append)
    b.subscribe("news", got["b"].append)
    other.subscribe("news", got["c"].append)
    for x in (a, b, other):
        await x.start()
    try:
        assert a.up and b.up and other.up
        assert a.key("agent", "box") == f"{ns}:agent:box"
        await a.publish("news", b"hello")
        await eventually(lambda: got["a"] == [b"hello"] and got["b"] == [b"hello"])
        await asyncio.sleep(0.2)
        assert got["c"] == []  # another namespace: another fleet
        assert a.published["news"] == 1 and b.received["news"] == 1
        assert a.resyncs == 1 and a.outages == 0
    finally:
        for x in (a, b, other):
            await x.stop()


async def test_outage_marks_down_drops_quietly_and_resyncs_when_back(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path, port=free_port())  # not started: Redis is down
    a = link(server.url, "out", "a")
    b = link(server.url, "out", "b")
    got: list[bytes] = []
    b.subscribe("news", got.append)
    resyncs: list[str] = []
    b.on_resync(lambda: resyncs.append("sync"))

    async def step() -> None:
        resyncs.append("async")

    b.on_resync_async(step)
    await a.start()
    await b.start()
    try:
        assert not a.up and not b.up  # started anyway
        await a.publish("news", b"lost")  # never raises while down
        assert a.dropped["news"] == 1
        server.start()
        await eventually(lambda: a.up and b.up, what="link up after Redis started")
        assert resyncs == ["sync", "async"]
        await a.publish("news", b"one")
        await eventually(lambda: got == [b"one"])

        server.kill()  # an outage, as abrupt as it gets
        await eventually(lambda: not a.up and not b.up, what="link marked down")
        assert b.outages == 1
        await a.publish("news", b"during")  # dropped, no exception
        server.start()
        await eventually(lambda: a.up and b.up, what="link back after restart")
        assert resyncs == ["sync", "async"] * 2
        await a.publish("news", b"two")
        await eventually(lambda: got == [b"one", b"two"], what="pub/sub after restart")
    finally:
        await a.stop()
        await b.stop()
        server.stop()


async def test_mark_down_from_a_part_reconnects_and_resyncs(
        redis_server: RedisServer) -> None:
    a = link(redis_server.url, f"t{secrets.token_hex(4)}", "a")
    await a.start()
    try:
        assert a.up and a.resyncs == 1
        a.mark_down(ConnectionError("a Lua call timed out"))
        assert not a.up
        await eventually(lambda: a.up and a.resyncs == 2, what="reconnect after mark_down")
    finally:
        await a.stop()


async def test_a_part_that_subscribes_after_start_gets_messages_and_a_resync(
        redis_server: RedisServer) -> None:
    ns = f"t{secrets.token_hex(4)}"
    a, b = link(redis_server.url, ns, "a"), link(redis_server.url, ns, "b")
    await a.start()
    await b.start()
    try:
        got: list[bytes] = []
        resynced: list[int] = []
        b.on_resync(lambda: resynced.append(b.resyncs))
        b.subscribe("late", got.append)
        # the link resubscribes, then resyncs: after the resync the channel is live
        await eventually(lambda: resynced != [], what="resync for the late part")
        await a.publish("late", b"x")
        await eventually(lambda: got == [b"x"], what="message on a late channel")
        assert b.up and b.outages == 0
    finally:
        await a.stop()
        await b.stop()


async def test_a_hung_redis_is_an_outage_too(tmp_path: Path) -> None:
    """SIGSTOP: the socket stays open but nothing answers. The periodic PING times
    out, the link goes down, and publishing returns at once instead of waiting."""
    server = RedisServer(tmp_path).start()
    a = link(server.url, "hung", "a")
    a.subscribe("news", lambda payload: None)
    await a.start()
    assert server.proc is not None
    try:
        assert a.up
        server.proc.signal(signal.SIGSTOP)
        await eventually(lambda: not a.up, what="hung Redis noticed")
        t0 = time.monotonic()
        await a.publish("news", b"x")
        assert a.dropped["news"] == 1
        waited = time.monotonic() - t0
        server.proc.signal(signal.SIGCONT)
        await eventually(lambda: a.up, what="back after SIGCONT")
        print(f"publish while down returned after {waited * 1000:.2f} ms")
    finally:
        server.proc.signal(signal.SIGCONT)
        await a.stop()
        server.stop()
