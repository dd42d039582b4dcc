"""Which prompt prefixes each worker has probably still cached: a bounded LRU per worker.

For every worker the index keeps the block hashes (``hub.routing.prompt_key``) of the
prompts it was recently sent, most recently used last. ``match`` counts how many of a
request's leading blocks a worker has: the length of the prefix it could reuse.

The hub cannot see a worker's KV cache, so this is an estimate, in the way of SGLang's
per-worker radix tree and llm-d's per-server block LRU: what we sent there recently is
probably still there. Two things keep the estimate honest:

- A prompt's blocks are touched last to first, so its leading blocks are the most
  recent: under pressure the LRU drops the tails of old prompts before their heads, as
  a radix tree evicts leaves first, and a shared head (a system prompt) stays as long as
  anything built on it is used.
- ``forget(worker)`` drops everything about a worker when its cache is known to be gone
  (removed, restarted, marked down); ``ttl_s`` (0 = off) optionally stops counting
  blocks untouched for that long.

Namespaces: blocks are stored under ``model`` (the caller may append a tenant to keep
tenants apart), mixed into the key as a 64-bit salt, so one LRU per worker holds every
model and the per-worker cap is one number.

Memory: ``entries_per_worker`` caps the entries of each worker; an entry costs about
120 bytes (a 64-bit int key in an OrderedDict; the timestamp object is shared by all
blocks of one ``record``), so the default 4,096 entries -- 512 KiB of prompt text,
~130k tokens, more than most llama-servers keep -- take about 0.5 MB per worker.
Every operation is O(blocks of the request); nothing scans a whole LRU.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

ENTRIES_PER_WORKER = 4096
BYTES_PER_ENTRY = 120  # measured with tracemalloc (tests/unit/routing/test_prefix_index.py)


@functools.lru_cache(maxsize=1024)
def namespace_salt(namespace: str) -> int:
    """A deterministic 64-bit salt for a namespace (a model, or model and tenant)."""
    digest = hashlib.blake2b(namespace.encode("utf-8", "surrogatepass"), digest_size=8,
                             person=b"spokehub.ns").digest()
    return int.from_bytes(digest, "little")


class PrefixIndex:
    def __init__(self, entries_per_worker: int = ENTRIES_PER_WORKER,
                 ttl_s: float = 0.0) -> None:
        if entries_per_worker < 1:
            raise ValueError("entries_per_worker must be >= 1")
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        self.entries_per_worker = entries_per_worker
        self.ttl_s = ttl_s
        self._lru: dict[str, OrderedDict[int, float]] = {}

    def record(self, worker: str, model: str, blocks: Sequence[int], now: float) -> None:
        """``worker`` was sent a prompt with these blocks at ``now``."""
        if not blocks:
            return
        lru = self._lru.get(worker)
        if lru is None:
            lru = self._lru[worker] = OrderedDict()
        salt = namespace_salt(model)
        cap = self.entries_per_worker
        move = lru.move_to_end
        # Only the first ``cap`` blocks can fit; last to first, so the head ends newest.
        for block in reversed(blocks[:cap]):
            key = block ^ salt
            lru[key] = now
            move(key)
        while len(lru) > cap:
            lru.popitem(last=False)

    def match(self, worker: str, model: str, blocks: Sequence[int],
              now: float | None = None) -> int:
        """How many leading ``blocks`` the worker has (entries older than ``ttl_s`` at
        ``now`` do not count; without ``now``, ages are not checked)."""
        lru = self._lru.get(worker)
        if not lru or not blocks:
            return 0
        salt = namespace_salt(model)
        get = lru.get
        oldest = now - self.ttl_s if (self.ttl_s and now is not None) else None
        for n, block in enumerate(blocks):
            seen = get(block ^ salt)
            if seen is None or (oldest is not None and seen < oldest):
                return n
        return len(blocks)

    def unrecord(self, worker: str, model: str, blocks: Sequence[int]) -> None:
        """Take back blocks recorded for a request the worker then failed."""
        lru = self._lru.get(worker)
        if not lru:
            return
        salt = namespace_salt(model)
        for block in blocks:
            lru.pop(block ^ salt, None)

    def forget(self, worker: str) -> None:
        """The worker's cache is gone (removed, restarted, marked down)."""
        self._lru.pop(worker, None)

    def size(self, worker: str) -> int:
        """Entries held for ``worker``: how much of the fleet's cached text it holds."""
        lru = self._lru.get(worker)
        return len(lru) if lru is not None else 0

    def workers(self) -> list[str]:
        return list(self._lru)

    def __repr__(self) -> str:
        entries = sum(len(lru) for lru in self._lru.values())
        return (f"<PrefixIndex workers={len(self._lru)} entries={entries} "
                f"cap={self.entries_per_worker}/worker ttl_s={self.ttl_s:g}>")
