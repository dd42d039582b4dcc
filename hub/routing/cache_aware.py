"""Cache-aware routing: send a conversation where its prompt is probably cached, unless
that worker is too busy.

A llama-server keeps the KV of recent prompts and reuses the longest common prefix: a
6th turn with a 4.8k-token history took 868 ms of prompt processing on a server that had
not seen the conversation and 52 ms on the one that served turn 5. So each request's
prompt key (``hub.routing.prompt_key``) is matched against what every candidate was sent
recently (``hub.routing.prefix_index``), and the match is weighed against load:

1. Room. A worker is *overloaded* when all its slots are taken (``load.is_full``) or
   it is much busier than the idlest candidate: utilisation above the idlest's by more
   than ``imbalance_abs`` *and* more than ``imbalance_rel`` times it (SGLang's two
   thresholds, on utilisation so that big and small workers compare). Overloaded workers
   are not chosen while any candidate has room; when none has, least loaded (power of
   two choices, ``LeastLoaded``) picks among all of them: reason ``load``. A worker of
   unknown capacity (no slots reported, no ``max_concurrency``) has its running requests
   as utilisation, so each one weighs like a full worker: there, load leads.
2. Session. A request with a session key (X-Session-ID, ``prompt_cache_key`` or
   ``user``) goes to the worker its conversation is pinned to while that worker is a
   candidate with room and no other has more of the prompt (the key may be shared by
   several conversations of one user): ``session``. If the pinned worker is gone, busy
   or was forgotten, the choice below is made and the session pinned there: ``repin``.
   A new session (no pin yet) is a new conversation: it can only match text it shares
   with other conversations (a system prompt, tools), which every worker soon holds,
   and where it goes now is where it stays. So it is placed among the workers holding
   the fewest conversations per slot (pinned within ``session_ttl_s``, decaying), and
   only then by the score below.
3. Prefix against load. With ``m`` the share of the prompt's leading blocks a worker
   has, ``floor`` the least share any worker with room has (what they all hold: a
   shared system prompt, tool definitions), ``edge = m - floor``, ``u`` the worker's
   utilisation, and ``d`` its recent demand (requests this policy sent it, per slot,
   each weighing exp(-age / demand_window_s)) against the mean ``D`` of the workers
   with room, every worker with room scores::

       score = (edge if edge >= hit_threshold else 0)
               - load_weight * u - demand_weight * (d - D) / (D + 1)

   and the best score wins; ties go to the session's worker, then to the worker holding
   the fewest cached blocks, then to the RNG. The reason is ``prefix-hit`` when the
   winner has at least ``hit_threshold`` of the prompt; else ``load`` if some candidate
   had the edge but lost on load, else ``prefix-miss`` (``load`` for a request without
   prompt blocks).

   The edge, not the share: a prefix that every worker has is no reason to prefer one.
   The demand term, because ``u`` only sees the requests running now, while a
   conversation placed on a worker keeps coming back to it: where conversations live
   must be balanced too (for requests without a session key, the only way to tell).
   Without them, the first worker to see a 2 KB system prompt (75% of a first turn)
   drew new conversations while it had a free slot and then kept them: 80 of 133
   requests in bench/cache_routing.py, busiest/idlest 4.0; with the edge and demand
   but no count of conversations, 9 of 16 first turns still went to that worker. The
   ``+ 1`` (a request per slot) keeps the term mild at a cold start: the first request
   to a two-slot worker of three costs it 0.14, less than a busy slot's 0.5; at steady
   load a worker with twice the mean demand loses nearly ``demand_weight``.

   ``hit_threshold`` 0.3 is SGLang's: below a third of the prompt the saving rarely pays
   for a busier worker. ``load_weight`` 1.0 says a prompt's worth of cache is worth a
   worker's worth of slots: a conversation stays on its half-busy worker while that
   worker's edge is above one half (a later turn: 0.8 - 0.5 beats an idle miss's 0);
   a 40% edge goes to an idle worker instead. llm-d weighs prefix 3 against queue 2
   plus KV use 2, a load term of the same size. Prefix-only routing, without it,
   collapsed in llm-d's tests (about 55% of requests completed).

Recording happens at pick time, not after the answer: the next request of the same
prefix may come before this one finishes (concurrent turns, an agent fanning out, a
retry), and it should go to the same worker, which will have the prefix by then. The
proxy undoes it with ``failed`` when the attempt fails before the first byte, refreshes
it with ``served`` after a good answer, and calls ``forget`` when a worker's cache is
gone. Prefixes are kept apart per tenant unless ``share_across_tenants``: a shared
index would let one tenant learn from the route header or the time to first token
whether another tenant's prompt is cached. This policy never sets llama.cpp's
``id_slot``: the server's own slot choice (longest common prefix) and its host-memory
prompt cache do the rest inside the worker.

Several hubs (``state.backend: redis``): ``on_served`` hands each good answer's prompt
key (block hashes, the tenant namespace and a hash of the session) to
``hub.state.prefixes``, which tells the other hubs; they ``adopt`` it, so a
conversation's next turn finds its worker through whichever hub it reaches.

Cost per request: one lookup per matched block per candidate, then one insertion per
block on the chosen worker; no scan of the index or the session table. Measured with
bench/prompt_key.py (busy 2-core machine): 22 us over 3 workers and 54 us over 16 for
a 1.3 KB chat, 49 and 75 us for a 20 KB one, recording included.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.config.kit import ConfigError, Section
from hub.routing import load
from hub.routing.least_loaded import LeastLoaded
from hub.routing.prefix_index import PrefixIndex
from hub.routing.prompt_key import BLOCK_CHARS, MAX_BLOCKS, prompt_blocks
from hub.routing.request import Choice, Reason, RouteRequest

if TYPE_CHECKING:
    from hub.fleet.registry import Worker


@dataclass(frozen=True, slots=True)
class CacheAwareConfig:
    block_chars: int = BLOCK_CHARS  # prompt-key block size, UTF-8 bytes (~32 tokens)
    max_blocks: int = MAX_BLOCKS  # blocks hashed per request: the first 32 KiB
    entries_per_worker: int = 4096  # prefix-index cap per worker (~0.5 MB)
    prefix_ttl_s: float = 0.0  # blocks untouched this long stop counting; 0 = no age limit
    hit_threshold: float = 0.3  # share of the prompt that makes a prefix hit
    load_weight: float = 1.0  # score lost per unit of utilisation
    imbalance_abs: float = 0.5  # overloaded: utilisation above the idlest's by more than
    imbalance_rel: float = 1.5  # ... this, and more than this many times the idlest's
    demand_weight: float = 0.5  # score lost per unit of relative demand above the mean
    demand_window_s: float = 60.0  # recent demand: requests chosen, decaying with this
    sessions_max: int = 16384  # pinned conversations kept (LRU); 0 = no stickiness
    session_ttl_s: float = 1800.0  # a pin unused this long is dropped
    share_across_tenants: bool = False  # one prefix index for all tenants


class CacheAware:
    name = "cache_aware"

    def __init__(self, cfg: CacheAwareConfig | None = None, *,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg or CacheAwareConfig()
        self._rng = rng or random.Random()
        self._clock = clock
        self._least = LeastLoaded(self._rng)
        self.index = PrefixIndex(self.cfg.entries_per_worker, self.cfg.prefix_ttl_s)
        # tenant + session key -> (worker name, worker generation, last used)
        self._sessions: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        self._generation: dict[str, int] = {}  # bumped by forget(): older pins are void
        # name -> (count, as of), decaying: requests sent lately, conversations pinned
        self._demand: dict[str, tuple[float, float]] = {}
        self._conversations: dict[str, tuple[float, float]] = {}
        # several hubs: (worker, namespace, blocks, session) of each good answer
        self.on_served: Callable[[str, str, tuple[int, ...], str | None], None] | None = None

    # -- what the API layer builds ------------------------------------------------------
    def route_request(self, model: str, payload: Mapping[str, Any], *, tenant: str = "-",
                      session_key: str | None = None) -> RouteRequest:
        """The request as this policy sees it, with the prompt key of ``payload``."""
        blocks = prompt_blocks(payload, block_chars=self.cfg.block_chars,
                               max_blocks=self.cfg.max_blocks)
        return RouteRequest(model, blocks, session_key, tenant)

    # -- decisions ----------------------------------------------------------------------
    def pick(self, candidates: Sequence[Worker], *,
             model: str | None = None) -> Worker | None:
        """The ``Policy`` protocol, without request information: least loaded."""
        return self._least.pick(candidates, model=model)

    def choose(self, candidates: Sequence[Worker], req: RouteRequest) -> Choice | None:
        """Pick a worker for ``req`` and remember its prompt (and session) there."""
        if not candidates:
            return None
        now = self._clock()
        namespace = self._namespace(req)
        blocks = req.blocks
        total = len(blocks)
        index = self.index
        matched = {w.name: index.match(w.name, namespace, blocks, now) for w in candidates}
        share = {name: n / total for name, n in matched.items()} if total else (
            dict.fromkeys(matched, 0.0))
        threshold = self.cfg.hit_threshold  # > 0, so nothing is a hit without blocks
        utils = [load.utilisation(w) for w in candidates]
        idlest = min(utils)
        roomy = [(w, u) for w, u in zip(candidates, utils, strict=True)
                 if not self._overloaded(w, u, idlest)]
        session = self._session_id(req)
        pinned = self._pinned(session, now) if session is not None else None

        reason: Reason
        if not roomy:
            chosen = self._least.pick(candidates)
            assert chosen is not None
            reason = "load"
        else:
            if session is not None and pinned is None:
                # A new conversation can only match text it shares with others (a
                # system prompt), which every worker soon holds; where it lives is
                # decided for its whole life: among the workers with the fewest.
                roomy = self._fewest_conversations(roomy, now)
            # What every roomy worker has (a shared system prompt, tool definitions)
            # favours none of them: a worker's edge is its share above this floor.
            floor = min(share[w.name] for w, _ in roomy)
            sticky = None
            if pinned:
                sticky = next((w for w, _ in roomy if w.name == pinned), None)
            best_hit = max((share[w.name] for w, _ in roomy
                            if share[w.name] - floor >= threshold), default=None)
            if sticky is not None and (best_hit is None or share[sticky.name] >= best_hit):
                chosen = sticky
            else:
                chosen = self._best(roomy, share, floor, sticky, now)
            if chosen is sticky:
                reason = "session"
            elif pinned is not None and sticky is None:
                reason = "repin"
            elif share[chosen.name] >= threshold:
                reason = "prefix-hit"
            elif any(s - floor >= threshold for s in share.values()):
                reason = "load"  # the worker with the prompt has no room
            else:
                reason = "prefix-miss" if total else "load"
        index.record(chosen.name, namespace, blocks, now)
        self._bump(self._demand, chosen.name, now, self.cfg.demand_window_s)
        if session is not None:
            if pinned != chosen.name:
                self._bump(self._conversations, chosen.name, now, self.cfg.session_ttl_s)
            self._pin(session, chosen.name, now)
        return Choice(chosen, reason, share[chosen.name], matched[chosen.name])

    def served(self, worker: Worker, req: RouteRequest) -> None:
        """A good answer came: the worker holds the prompt now; refresh its recency."""
        namespace = self._namespace(req)
        self.index.record(worker.name, namespace, req.blocks, self._clock())
        if self.on_served is not None:
            self.on_served(worker.name, namespace, req.blocks, self._session_id(req))

    def adopt(self, worker: str, namespace: str, blocks: tuple[int, ...],
              session: str | None) -> None:
        """Another hub's worker ``worker`` answered this prompt (and conversation)."""
        now = self._clock()
        self.index.record(worker, namespace, blocks, now)
        if session is not None and self.cfg.sessions_max:
            self._pin(session, worker, now)

    def failed(self, choice: Choice, req: RouteRequest) -> None:
        """The attempt failed before the first byte: take back the blocks this choice
        added (those the worker had before stay)."""
        self.index.unrecord(choice.worker.name, self._namespace(req),
                            req.blocks[choice.matched_blocks:])

    def forget(self, name: str) -> None:
        """The worker's cache is gone (removed, restarted, marked down): drop its
        prefixes; sessions pinned to it are re-pinned on their next request."""
        self.index.forget(name)
        self._generation[name] = self._generation.get(name, 0) + 1
        self._demand.pop(name, None)
        self._conversations.pop(name, None)

    # -- helpers ------------------------------------------------------------------------
    def _namespace(self, req: RouteRequest) -> str:
        if self.cfg.share_across_tenants:
            return req.model
        return f"{req.model}\x1f{req.tenant}"

    def _overloaded(self, w: Worker, u: float, idlest: float) -> bool:
        if load.is_full(w):
            return True
        cfg = self.cfg
        return u - idlest > cfg.imbalance_abs and u > cfg.imbalance_rel * idlest

    @staticmethod
    def _decayed(table: Mapping[str, tuple[float, float]], name: str, now: float,
                 window: float) -> float:
        """A count in which each event weighs exp(-age / window)."""
        entry = table.get(name)
        if entry is None:
            return 0.0
        value, then = entry
        return value * math.exp(-max(now - then, 0.0) / window)

    def _bump(self, table: dict[str, tuple[float, float]], name: str, now: float,
              window: float) -> None:
        table[name] = (self._decayed(table, name, now, window) + 1.0, now)

    def _fewest_conversations(self, roomy: list[tuple[Worker, float]],
                              now: float) -> list[tuple[Worker, float]]:
        """The roomy workers holding the fewest recently pinned conversations per slot
        (within half a conversation)."""
        ttl = self.cfg.session_ttl_s
        per_slot = [(self._decayed(self._conversations, w.name, now, ttl)
                     / (load.capacity(w) or 1), w, u) for w, u in roomy]
        low = min(p for p, _, _ in per_slot)
        return [(w, u) for p, w, u in per_slot if p <= low + 0.5 / (load.capacity(w) or 1)]

    def _best(self, roomy: list[tuple[Worker, float]], share: Mapping[str, float],
              floor: float, sticky: Worker | None, now: float) -> Worker:
        """Highest score; ties: the session's worker, then the fewest cached blocks,
        then the RNG."""
        cfg = self.cfg
        threshold = cfg.hit_threshold
        window = cfg.demand_window_s
        demand = [self._decayed(self._demand, w.name, now, window) / (load.capacity(w) or 1)
                  for w, _ in roomy]
        mean = sum(demand) / len(demand)
        best: list[Worker] = []
        best_key: tuple[float, bool, int] | None = None
        for (w, u), d in zip(roomy, demand, strict=True):
            edge = share[w.name] - floor
            score = (edge if edge >= threshold else 0.0) - cfg.load_weight * u
            score -= cfg.demand_weight * (d - mean) / (mean + 1.0)
            key = (score, w is sticky, -self.index.size(w.name))
            if best_key is None or key > best_key:
                best, best_key = [w], key
            elif key == best_key:
                best.append(w)
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _session_id(self, req: RouteRequest) -> str | None:
        if not req.session_key or not self.cfg.sessions_max:
            return None
        # a digest: a session key may name a user, and pins are shared between hubs
        return hashlib.blake2b(f"{req.tenant}\x1f{req.session_key}".encode(
            "utf-8", "surrogatepass"), digest_size=12).hexdigest()

    def _pinned(self, session: str, now: float) -> str | None:
        """The worker ``session`` is pinned to; "" when that pin is void (its worker was
        forgotten); None when there is no pin (never, or expired)."""
        entry = self._sessions.get(session)
        if entry is None:
            return None
        name, generation, last = entry
        if now - last > self.cfg.session_ttl_s:
            del self._sessions[session]
            return None
        if self._generation.get(name, 0) != generation:
            return ""
        return name

    def _pin(self, session: str, name: str, now: float) -> None:
        sessions = self._sessions
        sessions[session] = (name, self._generation.get(name, 0), now)
        sessions.move_to_end(session)
        while len(sessions) > self.cfg.sessions_max:
            sessions.popitem(last=False)

    def sessions(self) -> int:
        return len(self._sessions)

    def __repr__(self) -> str:
        cfg = self.cfg
        workers = self.index.workers()
        entries = sum(self.index.size(w) for w in workers)
        return (f"<CacheAware hit_threshold={cfg.hit_threshold:g} "
                f"load_weight={cfg.load_weight:g} workers={len(workers)} "
                f"entries={entries} sessions={len(self._sessions)}>")


def parse_cache_aware(raw: object, path: str) -> CacheAwareConfig:
    """Parse ``routing.cache_aware`` (None means all defaults); errors name the key."""
    s = Section(raw, path)
    d = CacheAwareConfig()
    cfg = CacheAwareConfig(
        block_chars=s.integer("block_chars", d.block_chars, lo=16, hi=4096),
        max_blocks=s.integer("max_blocks", d.max_blocks, lo=1, hi=4096),
        entries_per_worker=s.integer("entries_per_worker", d.entries_per_worker, lo=16,
                                     hi=10_000_000),
        prefix_ttl_s=s.number("prefix_ttl_s", d.prefix_ttl_s, exclusive_lo=False),
        hit_threshold=s.number("hit_threshold", d.hit_threshold),
        load_weight=s.number("load_weight", d.load_weight, exclusive_lo=False),
        imbalance_abs=s.number("imbalance_abs", d.imbalance_abs),
        imbalance_rel=s.number("imbalance_rel", d.imbalance_rel, lo=1.0, exclusive_lo=False),
        demand_weight=s.number("demand_weight", d.demand_weight, exclusive_lo=False),
        demand_window_s=s.number("demand_window_s", d.demand_window_s),
        sessions_max=s.integer("sessions_max", d.sessions_max, lo=0, hi=10_000_000),
        session_ttl_s=s.number("session_ttl_s", d.session_ttl_s),
        share_across_tenants=s.flag("share_across_tenants", d.share_across_tenants),
    )
    s.done()
    if cfg.hit_threshold > 1:
        raise ConfigError(f"{s.key('hit_threshold')}: must be <= 1, got {cfg.hit_threshold}")
    return cfg
