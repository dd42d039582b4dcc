"""The LRU store: bounded in bytes, entries expire, evictions counted; a fake clock."""

from __future__ import annotations

from hub.cache.store import ENTRY_OVERHEAD, Store, entry_size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def k(i: int) -> bytes:
    return i.to_bytes(32, "big")


SIZE = entry_size(k(0), b"x" * 100, "application/json")


def test_entry_size_counts_key_body_type_and_overhead() -> None:
    assert 32 + 100 + len("application/json") + ENTRY_OVERHEAD == SIZE


def test_hit_miss_and_same_bytes() -> None:
    store = Store(10 * SIZE, 1000, 60, Clock())
    assert store.get(k(1)) is None
    assert store.put(k(1), b"x" * 100, "application/json")
    entry = store.get(k(1))
    assert entry is not None and entry.body == b"x" * 100
    assert (store.hits, store.misses, len(store), store.bytes) == (1, 1, 1, SIZE)


def test_byte_bound_evicts_least_recently_used() -> None:
    store = Store(3 * SIZE, 1000, 60, Clock())
    for i in range(3):
        store.put(k(i), b"x" * 100, "application/json")
    assert store.get(k(0)) is not None  # 0 is now the most recently used
    store.put(k(3), b"x" * 100, "application/json")
    assert store.get(k(1)) is None  # the least recently used left
    assert all(store.get(k(i)) is not None for i in (0, 2, 3))
    assert store.bytes == 3 * SIZE <= store.max_bytes
    assert store.evicted_lru == 1


def test_big_entry_evicts_several_and_too_large_is_refused() -> None:
    store = Store(4 * SIZE, 2 * SIZE, 60, Clock())
    for i in range(4):
        store.put(k(i), b"x" * 100, "application/json")
    big = b"y" * (SIZE + 100)
    assert store.put(k(9), big, "application/json")
    assert store.bytes <= store.max_bytes and store.evicted_lru == 2
    assert not store.put(k(10), b"z" * (2 * SIZE + 1), "application/json")
    assert store.too_large == 1 and store.get(k(10)) is None


def test_replacing_an_entry_does_not_double_count() -> None:
    store = Store(10 * SIZE, 1000, 60, Clock())
    store.put(k(1), b"x" * 100, "application/json")
    store.put(k(1), b"x" * 100, "application/json")
    assert (len(store), store.bytes, store.evicted_lru) == (1, SIZE, 0)


def test_ttl_with_fake_clock() -> None:
    clock = Clock()
    store = Store(10 * SIZE, 1000, 60, clock)
    store.put(k(1), b"x" * 100, "application/json")
    clock.now += 59.9
    assert store.get(k(1)) is not None  # a hit does not extend the TTL
    clock.now += 0.1
    assert store.get(k(1)) is None
    assert (store.expired, len(store), store.bytes) == (1, 0, 0)


def test_expired_entries_leave_when_another_is_stored() -> None:
    clock = Clock()
    store = Store(10 * SIZE, 1000, 60, clock)
    store.put(k(1), b"x" * 100, "application/json")
    store.put(k(2), b"x" * 100, "application/json")
    clock.now += 61
    store.put(k(3), b"x" * 100, "application/json")
    assert (len(store), store.expired, store.bytes) == (1, 2, SIZE)


def test_resize_shrinks_now() -> None:
    store = Store(10 * SIZE, 1000, 60, Clock())
    for i in range(5):
        store.put(k(i), b"x" * 100, "application/json")
    store.resize(2 * SIZE, 1000, 30)
    assert len(store) == 2 and store.bytes <= 2 * SIZE
    assert store.get(k(4)) is not None and store.get(k(0)) is None
