"""least_loaded vs round_robin on a mixed fleet of real llama.cpp servers.

The fleet (tests/e2e/fleet.py): a small box with one slot and three times the cost per
token, and a big box with four slots, both registered by the real agent, which reports
their slot counts. Latency is measured in bench/routing_p95.py; here we assert the
routing behaviour that makes the difference, with wide margins:

* least_loaded never sends a request to a worker whose slots are all busy while another
  worker has room; round_robin does, and that request waits behind the running one;
* under the same bounded load (60 requests at concurrency 6), round_robin keeps sending
  the small box requests that wait in its queue while the big box has free slots;
  least_loaded (almost) never does, and sends the small box fewer requests overall.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.fleet import (
    BIG_SLOTS,
    Result,
    admin_workers,
    call,
    chat_body,
    fleet_hub,
    in_flight_at,
    queued_on,
    run_load,
    start_fleet,
    wait_for,
)
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker

LONG_TOKENS = 1500  # about 2 s of work on the small box, alone
SHORT_TOKENS = 16


@pytest.fixture(scope="module")
def fleet(logdir: Path) -> Iterator[tuple[LlamaWorker, LlamaWorker]]:
    small, big = start_fleet(logdir)
    try:
        yield small, big
    finally:
        small.stop()
        big.stop()


def drain(hub: HubProcess, name: str, on: bool) -> None:
    status, doc, _ = call(f"{hub.url}/admin/workers/{name}/{'drain' if on else 'undrain'}",
                          method="POST")
    assert status == 200 and doc["draining"] is on, doc


def busy_slots(worker: LlamaWorker) -> int:
    with urllib.request.urlopen(f"{worker.url}/slots", timeout=5) as resp:
        slots: list[dict[str, Any]] = json.load(resp)
    return sum(1 for s in slots if s.get("is_processing"))


def occupy(hub: HubProcess, small: str, big: str,
           small_box: LlamaWorker) -> tuple[threading.Thread, list[Result]]:
    """Start one long request on the small box and return once it holds the box's only
    slot: counted in flight by the hub, and processing in llama.cpp (the hub counts a
    request as soon as it is sent, before the worker took it into its slot). The big
    box is drained meanwhile so the policy has no choice, then put back."""
    out: list[Result] = []
    drain(hub, big, True)
    try:
        t = threading.Thread(target=lambda: out.extend(
            run_load(hub.port, chat_body(LONG_TOKENS), 1, 1)), daemon=True)
        t.start()
        wait_for(lambda: admin_workers(hub, None)[small]["in_flight"] == 1, 10,
                 "long request in flight on the small box")
        wait_for(lambda: busy_slots(small_box) == 1, 10,
                 "the long request in the small box's slot")
    finally:
        drain(hub, big, False)
    return t, out


@pytest.mark.parametrize("policy", ["least_loaded", "round_robin"])
def test_a_worker_with_every_slot_busy_gets_nothing_while_another_has_room(
        policy: str, fleet: tuple[LlamaWorker, LlamaWorker], tmp_path: Path) -> None:
    small, big = fleet
    with fleet_hub(policy, small, big, tmp_path) as (hub, small_name, big_name):
        long_thread, long_out = occupy(hub, small_name, big_name, small)
        # Three short requests at once: the big box has four free slots for them.
        shorts = run_load(hub.port, chat_body(SHORT_TOKENS), 3, 3)
        long_thread.join(60)
        assert not long_thread.is_alive()
    (long,) = long_out
    assert long.status == 200 and long.worker == small_name
    assert all(r.status == 200 for r in shorts), shorts
    on_small = [r for r in shorts if r.worker == small_name]
    if policy == "least_loaded":
        assert on_small == [], "least_loaded sent a request to a worker with no free slot"
        assert all(r.ended < long.ended for r in shorts), "short requests had to wait"
    else:
        # Round robin takes turns regardless of load: its pick for the small box
        # waits in llama.cpp's queue until the long request is done.
        assert on_small, shorts
        assert all(r.ended >= long.ended for r in on_small), (on_small, long)


def test_least_loaded_keeps_load_off_the_saturated_worker(
        fleet: tuple[LlamaWorker, LlamaWorker], tmp_path: Path) -> None:
    small, big = fleet
    body = chat_body(128)
    seen: dict[str, dict[str, int]] = {}
    for policy in ("round_robin", "least_loaded"):
        with fleet_hub(policy, small, big, tmp_path) as (hub, small_name, big_name):
            run_load(hub.port, body, 6, 2)  # warm up: connections, EWMA latencies
            results = run_load(hub.port, body, 60, 6)
        assert len(results) == 60 and all(r.status == 200 for r in results)
        queued = queued_on(results, small_name)
        seen[policy] = {
            "small": sum(r.worker == small_name for r in results),
            "queued": len(queued),
            # ... of which the big box had a free slot at that moment
            "queued_with_room": sum(in_flight_at(results, big_name, r.started) < BIG_SLOTS
                                    for r in queued)}
    rr, ll = seen["round_robin"], seen["least_loaded"]
    # Round robin splits evenly whatever the load: most of the small box's share waits
    # in its queue while the big box has room.
    assert rr["small"] >= 25 and rr["queued_with_room"] >= 15, seen
    # least_loaded gives the small box only what it has room for. It queues there only
    # when every slot in the fleet is busy (6 clients, 5 slots); the tolerance covers
    # slot counts up to one heartbeat old and the client's view of the timing.
    assert ll["queued_with_room"] <= 3, seen
    assert ll["small"] <= rr["small"] * 4 // 5, seen
