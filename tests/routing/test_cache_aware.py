from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from hub.config.schema import ConfigError
from hub.fleet.registry import Worker
from hub.routing import CacheAware, CacheAwareConfig, make_policy, parse_cache_aware
from hub.routing.prompt_key import prompt_blocks
from hub.routing.request import REASONS, Choice, RouteRequest, session_key_of
from tests.routing.support import worker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def policy(seed: int = 0, clock: Clock | None = None, **cfg: object) -> CacheAware:
    return CacheAware(CacheAwareConfig(**cfg),  # type: ignore[arg-type]
                      rng=random.Random(seed), clock=clock or Clock())


def fleet(n: int = 3, slots: int = 2) -> list[Worker]:
    return [worker(name, slots_total=slots) for name in "abcdefgh"[:n]]


def conv(cid: int, n: int) -> tuple[int, ...]:
    """Blocks of conversation ``cid`` after ``n`` blocks (a prefix grows each turn)."""
    return tuple(cid * 1000 + i for i in range(n))


def req(blocks: tuple[int, ...] = (), session: str | None = None,
        tenant: str = "t", model: str = "m") -> RouteRequest:
    return RouteRequest(model, blocks, session, tenant)


def choose(p: CacheAware, ws: Sequence[Worker], r: RouteRequest) -> Choice:
    choice = p.choose(ws, r)
    assert choice is not None
    return choice


def test_first_turn_misses_next_turn_hits_the_same_worker() -> None:
    p, ws = policy(), fleet()
    first = choose(p, ws, req(conv(1, 10)))
    assert (first.reason, first.matched, first.matched_blocks) == ("prefix-miss", 0.0, 0)
    first.worker.in_flight = 1  # still busy with turn 1 (half of its slots)
    second = choose(p, ws, req(conv(1, 13)))
    assert second.worker is first.worker
    assert second.reason == "prefix-hit"
    assert second.matched == pytest.approx(10 / 13)
    assert second.matched_blocks == 10
    assert second.header() == "prefix-hit; matched=0.77"


def test_new_conversations_spread_over_the_fleet() -> None:
    p, ws = policy(), fleet()
    picks = [choose(p, ws, req(conv(c, 8))).worker.name for c in range(1, 7)]
    assert Counter(picks) == {"a": 2, "b": 2, "c": 2}  # fewest cached blocks first


def test_a_small_match_does_not_attract() -> None:
    p, ws = policy(), fleet(2)
    b = ws[1]
    p.index.record("a", "m\x1ft", conv(1, 2), now=0.0)
    p.index.record("b", "m\x1ft", conv(9, 1), now=0.0)  # b holds less of the fleet's cache
    choice = choose(p, ws, req(conv(1, 10)))  # a has 20%: below the 30% threshold
    assert (choice.worker, choice.reason) == (b, "prefix-miss")
    assert choose(p, ws, req(conv(1, 6))).reason == "prefix-hit"  # 2 of 6 on a, 6 on b


def test_a_shared_system_prompt_does_not_pull_conversations_together() -> None:
    p, ws = policy(), fleet()
    a, b, c = ws
    system = conv(7, 30)
    for w in ws:
        p.index.record(w.name, "m\x1ft", system, now=0.0)
    a.in_flight = 1
    picks = []
    for cid in range(2):  # new conversations: 30 of 32 blocks cached everywhere
        choice = choose(p, ws, req(system + conv(cid + 1, 2)))
        assert choice.reason == "prefix-hit" and choice.matched == 30 / 32
        picks.append(choice.worker)
        choice.worker.in_flight += 1
    assert set(picks) == {b, c}


@pytest.mark.parametrize("sessions", [True, False])
def test_new_conversations_do_not_pile_onto_the_first_holder_of_a_prefix(
        sessions: bool) -> None:
    # a cold start: only the first worker has the shared system prompt yet
    clock = Clock()
    p, ws = policy(clock=clock), fleet()
    system = conv(7, 30)
    placed: Counter[str] = Counter()
    running: list[Worker] = []
    for cid in range(12):
        r = req(system + conv(cid + 1, 10), session=f"s{cid}" if sessions else None)
        choice = choose(p, ws, r)
        placed[choice.worker.name] += 1
        choice.worker.in_flight += 1
        running.append(choice.worker)
        if len(running) > 2:  # first turns take a while: two of them run at any time
            running.pop(0).in_flight -= 1
        clock.t += 0.6
    if sessions:  # new conversations go to the workers holding the fewest
        assert placed == {"a": 4, "b": 4, "c": 4}
    else:  # without session keys, recent demand evens it out
        assert max(placed.values()) <= 5 and len(placed) == 3, placed


def test_new_conversations_balance_by_conversations_per_slot() -> None:
    clock = Clock()
    p = policy(clock=clock)
    big, small = worker("big", slots_total=4), worker("small", slots_total=2)
    for i in range(12):
        choose(p, [big, small], req(conv(i + 1, 5), session=f"s{i}"))
        clock.t += 1
    assert p._decayed(p._conversations, "big", clock.t, 1800) == pytest.approx(8, abs=0.1)
    assert p._decayed(p._conversations, "small", clock.t, 1800) == pytest.approx(4, abs=0.1)


def test_demand_spreads_conversations_when_load_data_lags() -> None:
    # the in-flight counts never move (stale): recent demand still spreads the work
    def spread(demand_weight: float) -> Counter[str]:
        p, ws = policy(demand_weight=demand_weight), fleet()
        return Counter(choose(p, ws, req()).worker.name for _ in range(30))

    assert spread(0.5) == {"a": 10, "b": 10, "c": 10}
    assert spread(0.0) != {"a": 10, "b": 10, "c": 10}  # the RNG alone


def test_a_prefix_only_one_worker_has_yet_is_a_real_edge() -> None:
    p, ws = policy(), fleet()
    system = conv(7, 30)
    p.index.record("c", "m\x1ft", system, now=0.0)
    choice = choose(p, ws, req(system + conv(1, 2)))
    assert (choice.worker.name, choice.reason) == ("c", "prefix-hit")


def test_load_is_weighed_against_the_match() -> None:
    def setup() -> tuple[CacheAware, Worker, Worker]:
        p = policy()
        a, b = worker("a", slots_total=10), worker("b", slots_total=10)
        p.index.record("a", "m\x1ft", conv(1, 6), now=0.0)
        p.index.record("b", "m\x1ft", conv(9, 6), now=0.0)
        return p, a, b

    p, a, b = setup()
    a.in_flight = 5
    choice = choose(p, [a, b], req(conv(1, 10)))  # 0.6 - 0.5 > 0 - 0
    assert (choice.worker, choice.reason) == (a, "prefix-hit")
    p, a, b = setup()
    a.in_flight = 5
    choice = choose(p, [a, b], req(conv(1, 15)))  # 0.4 - 0.5 < 0: the match loses on load
    assert (choice.worker, choice.reason) == (b, "load")
    p, a, b = setup()
    a.in_flight, b.in_flight = 5, 4
    choice = choose(p, [a, b], req(conv(1, 15)))  # 0.4 - 0.5 > 0 - 0.4
    assert (choice.worker, choice.reason) == (a, "prefix-hit")


def test_full_worker_falls_back_to_least_loaded() -> None:
    p, ws = policy(), fleet()
    a, b, c = ws
    p.index.record("a", "m\x1ft", conv(1, 10), now=0.0)
    a.slots_busy = 2  # its agent reports every slot taken
    b.in_flight = 1
    for _ in range(20):
        choice = choose(p, ws, req(conv(1, 12)))
        assert (choice.worker, choice.reason) == (c, "load")
        p.forget("c")


def test_imbalance_falls_back_to_load() -> None:
    p, ws = policy(), [worker("a", slots_total=8), worker("b", slots_total=8)]
    a, b = ws
    p.index.record("a", "m\x1ft", conv(1, 10), now=0.0)
    a.in_flight = 4  # 0.5 above the idlest: not more than imbalance_abs
    assert choose(p, ws, req(conv(1, 10))).reason == "prefix-hit"
    a.in_flight = 5  # 0.625 above, and more than 1.5 x the idlest
    choice = choose(p, ws, req(conv(1, 10)))
    assert (choice.worker, choice.reason) == (b, "load")
    p.forget("b")
    b.in_flight = 2  # idlest now 0.25: a is 0.375 above
    assert choose(p, ws, req(conv(1, 10))).worker is a


def test_relative_threshold_counts_too() -> None:
    def route(a_busy: int, b_busy: int) -> Worker:
        p = policy(imbalance_abs=0.2, imbalance_rel=2.0)
        a, b = worker("a", slots_total=20), worker("b", slots_total=20)
        a.in_flight, b.in_flight = a_busy, b_busy
        p.index.record("a", "m\x1ft", conv(1, 10), now=0.0)
        return choose(p, [a, b], req(conv(1, 10))).worker

    assert route(12, 7).name == "a"  # 0.6 is 0.25 above 0.35, but not 2 x
    assert route(12, 5).name == "b"  # 0.6 is 0.35 above 0.25, and more than 2 x
    assert route(8, 5).name == "a"  # 0.4 is more than 2 x 0.25, but only 0.15 above


def test_all_overloaded_still_routes_by_load() -> None:
    p, ws = policy(), fleet(2, slots=1)
    a, b = ws
    a.in_flight, b.in_flight = 3, 1
    p.index.record("a", "m\x1ft", conv(1, 10), now=0.0)
    for _ in range(10):
        choice = choose(p, ws, req(conv(1, 10), session="s"))
        assert (choice.worker, choice.reason) == (b, "load")


def test_session_pins_and_repins() -> None:
    p, ws = policy(), fleet()
    first = choose(p, ws, req(conv(1, 5), session="s1"))
    pinned = first.worker
    # a rewritten history (no prefix match anywhere) still goes to the session's worker
    again = choose(p, ws, req(conv(2, 5), session="s1"))
    assert (again.worker, again.reason, again.matched) == (pinned, "session", 0.0)
    pinned.slots_busy = 2  # full: the session moves
    moved = choose(p, ws, req(conv(2, 6), session="s1"))
    assert moved.reason == "repin" and moved.worker is not pinned
    pinned.slots_busy = 0
    assert choose(p, ws, req(conv(3, 2), session="s1")).worker is moved.worker
    others = [w for w in ws if w is not moved.worker]
    gone = choose(p, others, req(conv(2, 7), session="s1"))  # not a candidate any more
    assert gone.reason == "repin"
    back = choose(p, ws, req(conv(2, 8), session="s1"))
    assert (back.worker, back.reason) == (gone.worker, "session")


def test_session_yields_to_a_better_prefix_elsewhere() -> None:
    # one "user" with two conversations: the prompt's worker wins, and the pin follows
    p, ws = policy(), fleet()
    c1 = choose(p, ws, req(conv(1, 10), session="alice"))
    p._sessions.clear()
    c2 = choose(p, ws, req(conv(2, 10), session="alice"))
    assert c1.worker is not c2.worker
    back = choose(p, ws, req(conv(1, 12), session="alice"))
    assert (back.worker, back.reason) == (c1.worker, "prefix-hit")
    assert choose(p, ws, req((), session="alice")).worker is c1.worker


def test_session_is_kept_over_an_equal_match_and_per_tenant() -> None:
    p, ws = policy(), fleet()
    system = conv(7, 6)
    for w in ws:  # every worker has the shared system prompt
        p.index.record(w.name, "m\x1ft", system, now=0.0)
    pinned = choose(p, ws, req((*system, 1), session="s")).worker
    for i in range(5):
        choice = choose(p, ws, req((*system, i + 100), session="s"))
        assert (choice.worker, choice.reason) == (pinned, "session")
    # the same session key in another tenant is another session
    assert choose(p, ws, req(system, session="s", tenant="u")).reason in {
        "prefix-miss", "prefix-hit"}


def test_forget_voids_prefixes_and_pins() -> None:
    p, ws = policy(), fleet()
    first = choose(p, ws, req(conv(1, 10), session="s"))
    p.forget(first.worker.name)
    assert p.index.size(first.worker.name) == 0
    again = choose(p, ws, req(conv(1, 12), session="s"))
    assert again.reason == "repin"
    assert again.matched == 0.0


def test_session_ttl_and_cap() -> None:
    clock = Clock()
    p, ws = policy(clock=clock, session_ttl_s=60.0, sessions_max=2), fleet()
    choose(p, ws, req((), session="s1"))
    clock.t += 61
    assert choose(p, ws, req((), session="s1")).reason == "load"  # expired: a new session
    choose(p, ws, req((), session="s2"))
    choose(p, ws, req((), session="s3"))
    assert p.sessions() == 2  # s1 dropped, least recently used
    no_sessions = policy(sessions_max=0)
    no_sessions.choose(ws, req(conv(1, 3), session="x"))
    assert no_sessions.sessions() == 0


def test_tenants_do_not_share_prefixes_unless_configured() -> None:
    p, ws = policy(), fleet()
    theirs = choose(p, ws, req(conv(1, 10), tenant="t1"))
    mine = choose(p, ws, req(conv(1, 10), tenant="t2"))
    assert mine.reason == "prefix-miss" and mine.matched == 0.0
    assert mine.worker is not theirs.worker
    shared = policy(share_across_tenants=True)
    theirs = choose(shared, ws, req(conv(1, 10), tenant="t1"))
    mine = choose(shared, ws, req(conv(1, 10), tenant="t2"))
    assert (mine.worker, mine.reason, mine.matched) == (theirs.worker, "prefix-hit", 1.0)


def test_failed_takes_back_only_what_the_choice_added() -> None:
    p, ws = policy(), fleet()
    turn1 = choose(p, ws, req(conv(1, 10)))
    turn2_req = req(conv(1, 16))
    turn2 = choose(p, ws, turn2_req)
    assert p.index.match(turn2.worker.name, "m\x1ft", conv(1, 16)) == 16
    p.failed(turn2, turn2_req)
    assert p.index.match(turn1.worker.name, "m\x1ft", conv(1, 16)) == 10


def test_served_refreshes_recency() -> None:
    p, ws = policy(entries_per_worker=20), fleet(1)
    r1 = req(conv(1, 10))
    choose(p, ws, r1)
    choose(p, ws, req(conv(2, 10)))
    p.served(ws[0], r1)  # r1 answered after r2 was sent: it is the newer one now
    choose(p, ws, req(conv(3, 10)))
    assert p.index.match("a", "m\x1ft", conv(1, 10)) == 10
    assert p.index.match("a", "m\x1ft", conv(2, 10)) == 0


def test_ties_are_broken_by_the_injected_rng() -> None:
    ws = fleet()

    def run(seed: int) -> list[str]:
        p = policy(seed)
        out = []
        for _ in range(60):
            out.append(choose(p, ws, req()).worker.name)  # no prompt: load only
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)
    assert set(Counter(run(5))) == {"a", "b", "c"}


def test_no_prompt_is_routed_by_load_and_pick_is_least_loaded() -> None:
    clock = Clock()
    p, ws = policy(clock=clock), fleet()
    ws[0].in_flight = 2
    ws[1].in_flight = 1
    for _ in range(10):
        clock.t += 600  # earlier requests are no longer recent demand
        choice = choose(p, ws, req())
        assert (choice.worker, choice.reason) == (ws[2], "load")
        assert p.pick(ws) is ws[2]
    assert p.choose([], req(conv(1, 3))) is None
    assert p.pick([]) is None


@pytest.mark.parametrize("sessions", [True, False])
def test_a_chat_workload_stays_sticky_and_balanced(sessions: bool) -> None:
    """12 conversations of 8 turns sharing a system prompt, over 3 two-slot workers; the
    last three requests are still running when the next is chosen. Nearly every turn
    after the first returns to its worker, and the workers share the work."""
    p, ws = policy(3), fleet()
    home: dict[int, str] = {}
    reasons: Counter[str] = Counter()
    served: Counter[str] = Counter()
    running: list[Worker] = []
    system = conv(99, 4)
    stayed = 0
    for turn in range(8):
        for cid in range(12):
            blocks = system + conv(cid + 1, 5 + 4 * turn)
            choice = choose(p, ws, req(blocks, session=f"s{cid}" if sessions else None))
            reasons[choice.reason] += 1
            served[choice.worker.name] += 1
            stayed += turn > 0 and choice.worker.name == home[cid]
            home[cid] = choice.worker.name
            choice.worker.in_flight += 1
            running.append(choice.worker)
            if len(running) > 3:
                running.pop(0).in_flight -= 1
    assert stayed >= 0.9 * 12 * 7, (stayed, reasons)
    assert reasons["session" if sessions else "prefix-hit"] >= 0.9 * 12 * 7
    assert max(served.values()) / min(served.values()) <= 1.5, served


def test_reasons_and_header() -> None:
    ws = fleet(1)
    assert Choice(ws[0], "load").header() == "load; matched=0.00"
    assert set(REASONS) == {"prefix-hit", "prefix-miss", "session", "repin", "load"}


def test_route_request_from_a_body() -> None:
    p = policy(block_chars=64, max_blocks=8)
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
    r = p.route_request("m", body, tenant="acme", session_key="s")
    assert r == RouteRequest("m", prompt_blocks(body, block_chars=64, max_blocks=8), "s",
                             "acme")
    assert len(r.blocks) == 8


def test_session_key_of() -> None:
    assert session_key_of("h", {"user": "u", "prompt_cache_key": "k"}) == "h"
    assert session_key_of(None, {"user": "u", "prompt_cache_key": "k"}) == "k"
    assert session_key_of("", {"user": "u"}) == "u"
    assert session_key_of(None, {"user": 5}) is None
    assert session_key_of(None, {}) is None
    long = session_key_of(None, {"user": "x" * 10_000})
    assert long is not None and len(long) == 33
    assert long == session_key_of(None, {"user": "x" * 10_000})


def test_make_policy_and_repr() -> None:
    cfg = CacheAwareConfig(hit_threshold=0.5)
    p = make_policy("cache_aware", rng=random.Random(1), cache_aware=cfg)
    assert isinstance(p, CacheAware) and p.cfg is cfg and p.name == "cache_aware"
    choose(p, fleet(), req(conv(1, 3), session="s"))
    assert repr(p) == ("<CacheAware hit_threshold=0.5 load_weight=1 workers=1 entries=3 "
                       "sessions=1>")


def test_parse() -> None:
    assert parse_cache_aware(None, "routing.cache_aware") == CacheAwareConfig()
    cfg = parse_cache_aware({"block_chars": 64, "max_blocks": 512, "hit_threshold": 0.5,
                             "load_weight": 0, "imbalance_abs": 0.25, "imbalance_rel": 1,
                             "sessions_max": 0, "session_ttl_s": 60, "prefix_ttl_s": 0,
                             "entries_per_worker": 1000, "share_across_tenants": True,
                             "demand_weight": 0, "demand_window_s": 30}, "r")
    assert cfg == CacheAwareConfig(block_chars=64, max_blocks=512, hit_threshold=0.5,
                                   load_weight=0.0, imbalance_abs=0.25, imbalance_rel=1.0,
                                   sessions_max=0, session_ttl_s=60.0, prefix_ttl_s=0.0,
                                   entries_per_worker=1000, share_across_tenants=True,
                                   demand_weight=0.0, demand_window_s=30.0)
    bad = [({"hit_threshold": 1.5}, r"routing\.cache_aware\.hit_threshold: must be <= 1"),
           ({"hit_threshold": 0}, r"routing\.cache_aware\.hit_threshold: must be > 0"),
           ({"block_chars": 8}, r"routing\.cache_aware\.block_chars: must be between 16"),
           ({"imbalance_rel": 0.5}, r"routing\.cache_aware\.imbalance_rel: must be >= 1"),
           ({"load_weight": -1}, r"routing\.cache_aware\.load_weight: must be >= 0"),
           ({"demand_window_s": 0}, r"routing\.cache_aware\.demand_window_s: must be > 0"),
           ({"share_across_tenants": "yes"},
            r"routing\.cache_aware\.share_across_tenants: must be true or false"),
           ({"ttl": 1}, r"routing\.cache_aware\.ttl: unknown key"),
           ([], r"routing\.cache_aware: must be a mapping")]
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_cache_aware(raw, "routing.cache_aware")
