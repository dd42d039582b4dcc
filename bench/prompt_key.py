#!/usr/bin/env python3
"""CPU cost of cache-aware routing per request: the prompt key and the policy's choice.

Bodies: a 1.3 KB chat (system prompt and two turns) and a 20 KB chat (a long
conversation with tool definitions), both as the API layer has them (parsed JSON).
For each: microseconds per ``prompt_blocks`` at several block sizes (the default is
marked), and microseconds per ``CacheAware.choose`` over 3 and 16 workers whose prefix
index holds the conversation on one worker and other conversations everywhere (the
choice includes recording the prompt). Figures are medians of --repeat timing runs;
run on a quiet machine for numbers worth quoting.

Usage: python -m bench.prompt_key [--repeat 7] [--number 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from hub.config.schema import WorkerSpec
from hub.fleet.registry import Worker
from hub.routing.cache_aware import CacheAware, CacheAwareConfig
from hub.routing.prompt_key import BLOCK_CHARS, prompt_blocks

WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with",
         "be", "by", "on", "not", "this", "are", "or", "from", "at", "which", "but", "have",
         "they", "you", "were", "there", "been", "one", "all", "we", "their", "cache",
         "prefix", "worker", "token", "prompt", "model", "request", "session", "answer")


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


def small_body() -> dict[str, Any]:
    rng = random.Random(1)
    return {"model": "m", "stream": True, "messages": [
        {"role": "system", "content": _text(rng, 500)},
        {"role": "user", "content": _text(rng, 300)},
        {"role": "assistant", "content": _text(rng, 250)},
        {"role": "user", "content": _text(rng, 120)}]}


def large_body() -> dict[str, Any]:
    rng = random.Random(2)
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": _text(rng, 200),
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": _text(rng, 60)}}}}}
        for i in range(4)]
    messages: list[dict[str, Any]] = [{"role": "system", "content": _text(rng, 1500)}]
    for _ in range(9):
        messages.append({"role": "user", "content": _text(rng, 900)})
        messages.append({"role": "assistant", "content": _text(rng, 950)})
    messages.append({"role": "user", "content": _text(rng, 300)})
    return {"model": "m", "stream": True, "tools": tools, "messages": messages}


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def fleet(n: int) -> list[Worker]:
    out = []
    for i in range(n):
        w = Worker(spec=WorkerSpec(name=f"w{i}", url=f"http://w{i}"), healthy=True)
        w.slots_total = 2
        out.append(w)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=7, help="timing runs, median taken")
    ap.add_argument("--number", type=int, default=2000, help="calls per timing run")
    args = ap.parse_args()
    if not (1 <= args.repeat <= 50 and 1 <= args.number <= 100_000):
        ap.error("keep it bounded: repeat 1..50, number 1..100000")
    for label, body in (("1.3 KB chat", small_body()), ("20 KB chat", large_body())):
        size = len(json.dumps(body, separators=(",", ":")))
        print(f"{label}: {size} bytes of JSON, {len(body['messages'])} messages")
        for block_chars in (64, BLOCK_CHARS, 256):
            def key(bc: int = block_chars, body: dict[str, Any] = body) -> object:
                return prompt_blocks(body, block_chars=bc)
            n_blocks = len(prompt_blocks(body, block_chars=block_chars))
            mark = "  (default)" if block_chars == BLOCK_CHARS else ""
            print(f"  prompt_blocks  block {block_chars:3d} B: {n_blocks:3d} blocks  "
                  f"{per_call_us(key, args.number, args.repeat):7.1f} us{mark}")
        blocks = prompt_blocks(body)
        for n_workers in (3, 16):
            ws = fleet(n_workers)
            policy = CacheAware(CacheAwareConfig(), rng=random.Random(0))
            rng = random.Random(3)
            for w in ws:  # other conversations everywhere
                for _ in range(20):
                    other = tuple(rng.getrandbits(64) for _ in range(len(blocks)))
                    policy.index.record(w.name, "m\x1f-", other, now=0.0)
            request = policy.route_request("m", body, session_key="s")
            first = policy.choose(ws, request)
            assert first is not None

            def choose(ws: list[Worker] = ws, policy: CacheAware = policy,
                       request: Any = request) -> object:
                return policy.choose(ws, request)
            print(f"  choose over {n_workers:2d} workers (prompt on one, match "
                  f"{len(blocks)} blocks): "
                  f"{per_call_us(choose, args.number, args.repeat):7.1f} us")


if __name__ == "__main__":
    main()
