"""The cache-aware prefix map shared by two hubs through a real redis-server: two
``cache_aware`` policies and the placement glue, one per hub; a conversation whose turns
alternate between the hubs keeps going to the worker that holds its prompt."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from hub.config.workers import WorkerSpec
from hub.fleet.registry import Registry
from hub.forward import placement
from hub.forward.call import Call
from hub.routing.cache_aware import CacheAware
from hub.state.prefixes import CHANNEL, PrefixShare, pack_blocks, unpack_blocks
from tests.state.limits_support import redis_server, two_links
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

__all__ = ["redis_server", "two_links"]  # fixtures

Links = tuple[LinkForTests, LinkForTests]
ROUTE = "/chat/completions"


class HubSide:
    """What one hub holds for routing: its registry and its cache-aware policy."""

    def __init__(self, link: LinkForTests | None, seed: int) -> None:
        self.registry = Registry([WorkerSpec(n, "http://127.0.0.1:9", models=("m",))
                                  for n in ("w1", "w2", "w3", "w4")])
        for w in self.registry:
            w.healthy = True
            w.slots_total = 4
            w.slots_busy = 0
        self.policy = CacheAware(rng=random.Random(seed))
        if link is not None:
            self.share = PrefixShare(link, lambda: self.policy,
                                     lambda name: self.registry.get(name) is not None)

    def turn(self, messages: list[dict[str, str]], session: str | None = None) -> Call:
        headers = {"X-Session-ID": session} if session else {}
        payload: dict[str, Any] = {"model": "m", "messages": messages}
        call = Call("r1", ROUTE, model="m", tenant="acme")
        call.route_req = placement.route_request(self.policy, ROUTE, "m", payload,
                                                 tenant="acme", headers=headers)
        worker = placement.place(self.policy, self.registry.candidates("m", ROUTE), "m",
                                 call)
        assert worker is not None and call.choice is not None
        placement.served(self.policy, call, 200)
        return call


def conversation(turns: int, tag: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are terse. " * 20}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"{tag} question {i}: " + "why? " * 60})
        messages.append({"role": "assistant", "content": f"{tag} answer {i}. " * 30})
    messages.append({"role": "user", "content": f"{tag} question {turns}: " + "why? " * 60})
    return messages  # each turn's prompt starts with the previous turn's


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _alternate(links: Links, session: str | None, expect: str) -> None:
    link_a, link_b = links
    a, b = HubSide(link_a, seed=1), HubSide(link_b, seed=2)
    await link_a.start()
    await link_b.start()
    a.share.start()
    b.share.start()
    try:
        hubs = [a, b]
        first = a.turn(conversation(0, "c"), session)
        assert first.choice is not None
        home = first.choice.worker.name
        for turn in range(1, 6):
            sender, receiver = hubs[(turn - 1) % 2], hubs[turn % 2]
            seen = receiver.share.adopted
            await until(lambda r=receiver, s=seen: r.share.adopted > s,  # type: ignore[misc]
                        f"turn {turn - 1} to reach the other hub")
            call = receiver.turn(conversation(turn, "c"), session)
            assert call.choice is not None
            assert call.choice.worker.name == home, (turn, call.choice)
            assert call.choice.reason == expect, (turn, call.choice)
            assert sender is not receiver
        # without the shared map, a hub that never saw the conversation misses it
        alone = HubSide(None, seed=2)
        call = alone.turn(conversation(1, "c"), session)
        assert call.choice is not None and call.choice.reason == "prefix-miss"
    finally:
        await a.share.aclose()
        await b.share.aclose()
    assert a.policy.on_served is None


async def test_turns_alternating_between_hubs_hit_the_cached_worker(two_links: Links) -> None:
    await _alternate(two_links, None, "prefix-hit")


async def test_sessions_pinned_at_one_hub_stick_at_the_other(two_links: Links) -> None:
    await _alternate(two_links, "conv-42", "session")


async def test_only_hashes_travel_and_unknown_workers_are_skipped(
        two_links: Links, redis_server: RedisServer) -> None:
    link_a, link_b = two_links
    a, b = HubSide(link_a, seed=1), HubSide(link_b, seed=2)
    b.registry.remove("w4")
    sent: list[bytes] = []
    await link_a.start()
    await link_b.start()
    listener = LinkForTests(redis_server.url, "spy", link_a.namespace)
    listener.subscribe(CHANNEL, sent.append)
    await listener.start()
    b.share.start()
    try:
        secret = "the launch code is 12345 " * 10
        a.policy.on_served = a.share.queue
        call_msgs = [{"role": "user", "content": secret}]
        call = a.turn(call_msgs, "user@example.com")
        assert call.choice is not None
        # a message for a worker hub B does not know, and the real one
        assert call.route_req is not None
        a.share.queue("w4", "m\x1facme", call.route_req.blocks, None)
        await a.share.tick()
        await until(lambda: bool(sent), "the message")
        assert b"launch code" not in sent[0] and b"example.com" not in sent[0]
        doc = json.loads(sent[0])
        assert doc["hub"] == "hub-a"
        workers = [e[0] for e in doc["e"]]
        assert set(workers) == {call.choice.worker.name, "w4"}
        for entry in doc["e"]:
            assert unpack_blocks(entry[3]) == call.route_req.blocks
        await until(lambda: b.share.adopted >= 1, "hub B to adopt")
        expected = 0 if call.choice.worker.name == "w4" else 1
        assert b.share.adopted == expected
        assert b.policy.index.size("w4") == 0
    finally:
        await b.share.aclose()
        await a.share.aclose()
        await listener.aclose()


def test_block_packing_round_trips() -> None:
    blocks = (0, 1, 2**64 - 1, 123456789)
    assert unpack_blocks(pack_blocks(blocks)) == blocks


def test_prefix_share_rehooks_a_new_policy() -> None:
    class NoLink:
        hub_id = "x"
        up = False

        def subscribe(self, channel: str, handler: Callable[[bytes], None]) -> None:
            pass

    current: list[CacheAware] = [CacheAware()]
    share = PrefixShare(NoLink(), lambda: current[0], lambda n: True)  # type: ignore[arg-type]
    assert current[0].on_served == share.queue
    current[0] = CacheAware()  # a reload built a new policy
    share.hook()
    assert current[0].on_served == share.queue


