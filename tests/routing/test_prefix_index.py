from __future__ import annotations

import random
import tracemalloc

import pytest

from hub.routing.prefix_index import BYTES_PER_ENTRY, PrefixIndex, namespace_salt


def blocks(start: int, n: int) -> tuple[int, ...]:
    return tuple(range(start, start + n))


def test_match_counts_leading_blocks() -> None:
    index = PrefixIndex()
    index.record("a", "m", blocks(0, 10), now=0.0)
    assert index.match("a", "m", blocks(0, 10)) == 10
    assert index.match("a", "m", blocks(0, 14)) == 10  # the next turn: 10 of 14
    assert index.match("a", "m", blocks(0, 4)) == 4
    assert index.match("a", "m", (0, 1, 99, 3)) == 2  # stops at the first gap
    assert index.match("a", "m", (50, 1, 2)) == 0  # the first block differs
    assert index.match("a", "m", ()) == 0
    assert index.match("b", "m", blocks(0, 10)) == 0


def test_models_are_separate_namespaces() -> None:
    index = PrefixIndex()
    index.record("a", "m1", blocks(0, 5), now=0.0)
    assert index.match("a", "m2", blocks(0, 5)) == 0
    index.record("a", "m2", blocks(0, 5), now=0.0)
    assert index.size("a") == 10  # one LRU per worker holds both
    assert namespace_salt("m1") == namespace_salt("m1") != namespace_salt("m2")


def test_entries_never_exceed_the_cap() -> None:
    index = PrefixIndex(entries_per_worker=64)
    rng = random.Random(1)
    for _ in range(500):
        start = rng.randrange(10_000)
        index.record("a", "m", blocks(start, rng.randrange(1, 200)), now=0.0)
        assert index.size("a") <= 64
    assert index.size("a") == 64
    index.record("a", "m", blocks(0, 300), now=0.0)  # one prompt larger than the cap
    assert index.size("a") == 64
    assert index.match("a", "m", blocks(0, 300)) == 64  # its head was kept


def test_old_prompts_lose_their_tails_first() -> None:
    index = PrefixIndex(entries_per_worker=15)
    index.record("a", "m", blocks(0, 10), now=0.0)
    index.record("a", "m", blocks(100, 10), now=1.0)
    assert index.match("a", "m", blocks(0, 10)) == 5  # head of the older prompt left
    assert index.match("a", "m", blocks(100, 10)) == 10


def test_a_shared_head_outlives_the_conversations_on_it() -> None:
    index = PrefixIndex(entries_per_worker=40)
    system = blocks(0, 8)
    for conv in range(20):
        index.record("a", "m", system + blocks(1000 * (conv + 1), 10), now=float(conv))
    assert index.match("a", "m", system + blocks(99_000, 3)) == 8
    assert index.match("a", "m", system + blocks(20_000, 10)) == 18
    assert index.match("a", "m", system + blocks(1000, 10)) == 8  # long evicted


def test_rerecording_refreshes() -> None:
    index = PrefixIndex(entries_per_worker=20)
    index.record("a", "m", blocks(0, 10), now=0.0)
    index.record("a", "m", blocks(100, 10), now=1.0)
    index.record("a", "m", blocks(0, 10), now=2.0)  # used again: now the newest
    index.record("a", "m", blocks(200, 10), now=3.0)
    assert index.match("a", "m", blocks(0, 10)) == 10
    assert index.match("a", "m", blocks(100, 10)) == 0


def test_ttl() -> None:
    index = PrefixIndex(ttl_s=60.0)
    index.record("a", "m", blocks(0, 10), now=100.0)
    index.record("a", "m", blocks(0, 4), now=150.0)
    assert index.match("a", "m", blocks(0, 10), now=159.0) == 10
    assert index.match("a", "m", blocks(0, 10), now=161.0) == 4  # the tail is stale
    assert index.match("a", "m", blocks(0, 10), now=211.0) == 0
    assert index.match("a", "m", blocks(0, 10)) == 10  # no time given: ages not checked
    assert PrefixIndex().match("a", "m", blocks(0, 3), now=1e9) == 0


def test_forget_and_unrecord() -> None:
    index = PrefixIndex()
    index.record("a", "m", blocks(0, 10), now=0.0)
    index.record("b", "m", blocks(0, 10), now=0.0)
    index.unrecord("a", "m", blocks(6, 4))
    assert index.match("a", "m", blocks(0, 10)) == 6
    index.unrecord("zzz", "m", blocks(0, 3))  # unknown worker: nothing to do
    index.forget("a")
    assert index.match("a", "m", blocks(0, 10)) == 0
    assert index.size("a") == 0
    assert index.workers() == ["b"]
    index.forget("a")


def test_memory_per_worker_is_bounded() -> None:
    cap = 4096
    index = PrefixIndex(entries_per_worker=cap)
    rng = random.Random(2)
    prompts = [tuple(rng.getrandbits(64) for _ in range(100)) for _ in range(3 * cap // 100)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, prompt in enumerate(prompts):
            index.record("a", "m", prompt, now=float(i))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert index.size("a") == cap
    # ~120 bytes an entry (the docstring's figure); generous bound for other Pythons
    assert used / cap < 2 * BYTES_PER_ENTRY, used / cap


def test_bad_settings_and_repr() -> None:
    with pytest.raises(ValueError, match="entries_per_worker"):
        PrefixIndex(0)
    with pytest.raises(ValueError, match="ttl_s"):
        PrefixIndex(ttl_s=-1)
    index = PrefixIndex(100, ttl_s=30)
    index.record("a", "m", blocks(0, 3), now=0.0)
    index.record("a", "m", (), now=0.0)
    assert repr(index) == "<PrefixIndex workers=1 entries=3 cap=100/worker ttl_s=30>"
