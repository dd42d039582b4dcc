"""An in-memory LRU of answers, bounded in bytes, each entry served for a TTL.

Sync and single-threaded (the hub's event loop); the clock is injected. An entry's
size is its key, its body, its content type and :data:`ENTRY_OVERHEAD` (the Python
objects around them), so ``max_bytes`` bounds what the cache really holds within a
small factor. Expired entries are dropped when looked up and, oldest first, when a new
entry is stored; the rest leave by LRU when the bytes run out. Counters are plain ints,
read by the metrics at scrape time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ENTRY_OVERHEAD = 256  # bytes per entry for the dict slot, the Entry and its objects


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    content_type: str
    expires: float
    size: int


def entry_size(key: bytes, body: bytes, content_type: str) -> int:
    return len(key) + len(body) + len(content_type) + ENTRY_OVERHEAD


class Store:
    def __init__(self, max_bytes: int, max_entry_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evicted_lru = 0
        self.expired = 0
        self.too_large = 0  # answers over max_entry_bytes, not stored

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Entry | None:
        """The live entry for ``key`` (now the most recently used), counted as a hit or
        a miss."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self.clock():
            self._drop(key, entry)
            self.expired += 1
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: bytes, body: bytes, content_type: str,
            ttl_s: float | None = None) -> bool:
        """Store an answer, evicting expired then least recently used entries to make
        room; False if it is larger than ``max_entry_bytes``. ``ttl_s``: served for this
        long (at most the cache's TTL; an entry from the shared level keeps its age)."""
        if len(body) > self.max_entry_bytes:
            self.too_large += 1
            return False
        now = self.clock()
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        size = entry_size(key, body, content_type)
        self._purge_expired(now)
        self._make_room(self.max_bytes - size)
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        self._entries[key] = Entry(body, content_type, now + ttl, size)
        self.bytes += size
        return True

    def resize(self, max_bytes: int, max_entry_bytes: int, ttl_s: float) -> None:
        """New bounds (a reload); entries over them leave now. Stored entries keep the
        expiry they were given."""
        self.max_bytes, self.max_entry_bytes, self.ttl_s = max_bytes, max_entry_bytes, ttl_s
        for key, entry in list(self._entries.items()):
            if len(entry.body) > max_entry_bytes:
                self._drop(key, entry)
                self.evicted_lru += 1
        self._make_room(max_bytes)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _make_room(self, limit: int) -> None:
        entries = self._entries
        while entries and self.bytes > limit:
            _, entry = entries.popitem(last=False)
            self.bytes -= entry.size
            self.evicted_lru += 1

    def _purge_expired(self, now: float) -> None:
        """Expired entries at the LRU end go first (an entry used since it was stored
        may sit further in; it leaves when looked up or by LRU)."""
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.expires > now:
                return
            self._drop(key, entry)
            self.expired += 1

    def _drop(self, key: bytes, entry: Entry) -> None:
        del self._entries[key]
        self.bytes -= entry.size

    def __repr__(self) -> str:
        return f"<Store {len(self._entries)} entries {self.bytes}/{self.max_bytes} bytes>"
