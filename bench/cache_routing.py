#!/usr/bin/env python3
"""Multi-turn chat against real llama-servers: prompt-cache reuse and time to first token
by routing policy.

Fleet: --workers real llama-servers (default 3), each with -np --slots (2) and -t 1,
serving a generated model wide enough that reading a long prompt shows in the time to
first token (scripts/tinymodel.py: --n-embd, --n-layer). The default, 512 wide with 2
layers (153 MB), reads a cold 1.5k-token prompt at about 3,700 tokens/s with -t 1 (vs
~6,000 for 256 wide, ~1,400 for 512 wide with 4 layers), and the same prompt again in
~11 ms: slow enough that a re-read history shows, fast enough for a 6-minute run. The
model's prompt speed is measured and printed first.

Workload (the same for every policy, from --seed): --sessions conversations (16) of
--min-turns..--max-turns turns (6..10). Each starts with one system prompt shared by all
sessions (--system-chars), each turn adds a user message (--user-chars) and the streamed
answer (--max-tokens tokens, ignore_eos), so the history grows to several thousand
characters; users pause --think seconds between turns. Every request is stream=True
with X-Session-ID set to its conversation.

Policies (--policies, comma-separated), each on freshly started workers (empty caches):
- ``round_robin``, ``least_loaded``, ``cache_aware``: a real hub process
  (``python -m hub serve``) with the workers in its config (max_concurrency = slots).
  A policy the hub rejects at start-up is reported as not available.
- ``direct:<policy>``: no hub. The client routes each request itself with the policy
  class from hub.routing, over Worker objects whose in-flight counts it keeps, and waits
  in one FIFO for a worker with room, as the hub does. This is a dry run of a policy the
  hub cannot run yet (``direct:cache_aware``), labelled as such in the table.

Per policy: completed and failed requests; the fleet's cached-prompt-token ratio, from
the workers' own counts (``timings.cache_n`` / ``prompt_n`` of each answer's last chunk,
else ``usage.prompt_tokens_details.cached_tokens``); TTFT p50/p99 (time to the first
chunk with content); busiest/idlest worker by requests served (``X-Spokehub-Worker``).

The workers keep llama.cpp's own host-memory prompt cache (--cache-ram, 8 GiB by default
in this build). For this small model that holds every conversation of the bench on
every worker, so even round robin reuses much of each prompt; --cache-ram MIB sizes it
like a real deployment, where a worker's cache holds its share of the conversations
(with an 8B model, 8 GiB is ~64k tokens: ~20 conversations of this size), not the fleet's.

One round of the default policies takes about 6 minutes on a 2-core machine; --rounds N
alternates the order and pools the results, so that machine noise hits all policies.

Usage: python -m bench.cache_routing [--policies round_robin,least_loaded,cache_aware,
       direct:cache_aware] [--sessions 16] [--min-turns 6] [--max-turns 10] [--seed 1]
       [--rounds 1] [--cache-ram MIB] [--csv FILE]
       (see --help for sizes, model and time limits)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import random
import shutil
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hub.config.schema import WorkerSpec
from hub.fleet.registry import Worker
from hub.routing import CacheAware, LeastLoaded, RoundRobin
from hub.routing.request import Choice, RouteRequest
from scripts.tinymodel import write_model
from tests.support.hubproc import HubProcess
from tests.support.procs import Proc, free_port, wait_http

MODEL = "bench"
CACHE = Path(os.environ.get("SPOKEHUB_CACHE", Path.home() / ".cache" / "spokehub"))
LLAMA_VERSION = os.environ.get("SPOKEHUB_LLAMA_CPP_PY_VERSION", "0.3.36")
TENANT = "bench"

WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with",
         "be", "by", "on", "not", "this", "are", "or", "from", "at", "which", "but", "have",
         "they", "you", "were", "there", "been", "one", "all", "we", "their", "cache",
         "prefix", "worker", "token", "prompt", "model", "request", "session", "answer",
         "history", "router", "server", "latency", "memory", "slot", "queue", "batch",
         "kernel", "matrix", "vector", "layer", "weight", "context", "window", "reply")


def words(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


# -- the fleet --------------------------------------------------------------------------


def llama_server() -> Path:
    """The llama-server binary built by scripts/llamacpp.sh (not built here)."""
    explicit = os.environ.get("SPOKEHUB_LLAMA_SERVER")
    if explicit:
        return Path(explicit)
    dest = CACHE / f"llama.cpp-{LLAMA_VERSION}"
    if not (dest / ".complete").exists():
        raise SystemExit(f"no llama-server build in {dest}: run scripts/llamacpp.sh first")
    return dest / "bin" / "llama-server"


def bench_model(n_embd: int, n_layer: int) -> Path:
    out = CACHE / "models" / f"bench-w{n_embd}-l{n_layer}-s7.gguf"
    if not out.exists():
        vocab = llama_server().parent.parent / "vocab" / "ggml-vocab-llama-spm.gguf"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_model(vocab, out, seed=7, name=f"bench-w{n_embd}-l{n_layer}", n_embd=n_embd,
                    n_layer=n_layer, n_head=max(1, n_embd // 64), n_ff=2 * n_embd)
    return out


@dataclass
class LlamaServer:
    name: str
    model: Path
    logdir: Path
    slots: int
    ctx: int
    cache_ram_mib: int | None = None  # llama-server --cache-ram; None: its default
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = llama_server()
        argv = [str(binary), "-m", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "--alias", MODEL, "-c", str(self.ctx),
                "-np", str(self.slots), "-t", "1", "--slots", "--no-webui"]
        if self.cache_ram_mib is not None:
            argv += ["--cache-ram", str(self.cache_ram_mib)]
        env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
        self.proc = Proc(argv, self.logdir / f"{self.name}-{self.port}.log", env)
        self.proc.start()

    def wait(self) -> None:
        assert self.proc is not None
        wait_http(f"{self.url}/health", self.proc.proc, timeout=120)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def start_fleet(args: argparse.Namespace, model: Path, logdir: Path) -> list[LlamaServer]:
    servers = [LlamaServer(f"w{i + 1}", model, logdir, args.slots, args.ctx, args.cache_ram)
               for i in range(args.workers)]
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait()
    except BaseException:
        stop_fleet(servers)
        raise
    return servers


def stop_fleet(servers: Sequence[LlamaServer]) -> None:
    for s in servers:
        s.stop()


def post_json(url: str, body: dict[str, Any], timeout: float = 300.0) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def measure_prompt_speed(server: LlamaServer, chars: int) -> str:
    """Prompt tokens/s of the model on an otherwise idle worker, cold and repeated."""
    text = f"{chars} " + words(random.Random(chars), chars)  # shares no prefix with others
    body = {"prompt": text, "n_predict": 1, "cache_prompt": True}
    cold = post_json(f"{server.url}/completion", body)["timings"]
    warm = post_json(f"{server.url}/completion", body)["timings"]
    return (f"{cold['prompt_n']} prompt tokens ({chars} characters): "
            f"{cold['prompt_ms']:.0f} ms cold = {cold['prompt_per_second']:.0f} tokens/s; "
            f"the same prompt again: {warm['prompt_ms']:.0f} ms for {warm['prompt_n']} "
            f"token(s), {warm.get('cache_n', '?')} from cache")


# -- the workload -------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    sid: str
    start_s: float
    users: tuple[str, ...]
    think_s: tuple[float, ...]


def workload(args: argparse.Namespace) -> tuple[str, list[Session]]:
    rng = random.Random(args.seed)
    system = "You are the support assistant of a small hosting company. " + words(
        rng, args.system_chars)
    lo, hi = args.user_chars
    tlo, thi = args.think
    sessions = []
    for i in range(args.sessions):
        turns = rng.randint(args.min_turns, args.max_turns)
        sessions.append(Session(
            sid=f"conv-{args.seed}-{i:02d}",
            start_s=rng.uniform(0.0, args.stagger),
            users=tuple(words(rng, rng.randint(lo, hi)) for _ in range(turns)),
            think_s=tuple(rng.uniform(tlo, thi) for _ in range(turns))))
    return system, sessions


# -- one request ----------------------------------------------------------------------------


@dataclass
class Result:
    session: str
    turn: int
    ok: bool
    worker: str = ""
    ttft_s: float | None = None
    prompt_n: int = 0  # prompt tokens processed
    cache_n: int = 0  # prompt tokens reused from the worker's cache
    text: str = ""
    error: str = ""
    reason: str = ""  # direct cache_aware only


async def stream_chat(http: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                      headers: dict[str, str], result: Result) -> None:
    start = time.monotonic()
    async with http.post(url, json=payload, headers=headers) as resp:
        result.worker = result.worker or resp.headers.get("X-Spokehub-Worker", "")
        if resp.status != 200:
            result.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            return
        parts: list[str] = []
        timings: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        done = False
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                result.error = f"stream error: {event['error']}"[:200]
                return
            for choice in event.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if result.ttft_s is None:
                        result.ttft_s = time.monotonic() - start
                    parts.append(content)
            timings = event.get("timings") or timings
            usage = event.get("usage") or usage
        if not done:
            result.error = "stream ended without [DONE]"
            return
    if timings:
        result.prompt_n = int(timings.get("prompt_n", 0))
        result.cache_n = int(timings.get("cache_n", 0))
    elif usage:
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
        result.prompt_n = int(usage.get("prompt_tokens", 0)) - cached
        result.cache_n = cached
    result.text = "".join(parts)
    result.ok = result.ttft_s is not None


class HubRouter:
    """Requests go to a hub process; it routes."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/v1/chat/completions"

    async def send(self, http: aiohttp.ClientSession, payload: dict[str, Any], sid: str,
                   result: Result) -> None:
        await stream_chat(http, self.url, payload, {"X-Session-ID": sid}, result)


class DirectRouter:
    """The client routes with a hub.routing policy, straight to the workers, keeping the
    in-flight counts itself and waiting (FIFO) for room like the hub's worker queue."""

    def __init__(self, policy: str, servers: Sequence[LlamaServer], slots: int,
                 seed: int) -> None:
        self.workers = {s.url: Worker(spec=WorkerSpec(name=s.name, url=s.url,
                                                      max_concurrency=slots),
                                      healthy=True, slots_total=slots) for s in servers}
        rng = random.Random(seed)
        self.cache_aware: CacheAware | None = None
        self.policy: RoundRobin | LeastLoaded | CacheAware
        if policy == "round_robin":
            self.policy = RoundRobin()
        elif policy == "least_loaded":
            self.policy = LeastLoaded(rng)
        elif policy == "cache_aware":
            self.policy = self.cache_aware = CacheAware(rng=rng)
        else:
            raise SystemExit(f"direct mode has no policy {policy!r}")
        self.room = asyncio.Condition()

    async def _acquire(self, payload: dict[str, Any],
                       sid: str) -> tuple[Worker, Choice | None, RouteRequest | None]:
        async with self.room:
            while True:
                candidates = [w for w in self.workers.values() if w.routable]
                if candidates:
                    break
                await self.room.wait()
            choice: Choice | None = None
            req: RouteRequest | None = None
            if self.cache_aware is not None:
                req = self.cache_aware.route_request(MODEL, payload, tenant=TENANT,
                                                     session_key=sid)
                choice = self.cache_aware.choose(candidates, req)
                assert choice is not None
                worker = choice.worker
            else:
                picked = self.policy.pick(candidates)
                assert picked is not None
                worker = picked
            worker.in_flight += 1
            return worker, choice, req

    async def send(self, http: aiohttp.ClientSession, payload: dict[str, Any], sid: str,
                   result: Result) -> None:
        worker, choice, req = await self._acquire(payload, sid)
        result.worker = worker.name
        if choice is not None:
            result.reason = choice.reason
        try:
            await stream_chat(http, f"{worker.url}/v1/chat/completions", payload, {}, result)
        finally:
            worker.in_flight -= 1
            async with self.room:
                self.room.notify()
            if self.cache_aware is not None and choice is not None and req is not None:
                if result.ok:
                    self.cache_aware.served(worker, req)
                elif result.ttft_s is None:
                    self.cache_aware.failed(choice, req)


# -- a run ----------------------------------------------------------------------------------


async def run_sessions(router: HubRouter | DirectRouter, system: str,
                       sessions: Sequence[Session], args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.run_limit_s
    timeout = aiohttp.ClientTimeout(total=args.request_timeout_s)

    async def converse(http: aiohttp.ClientSession, s: Session) -> None:
        await asyncio.sleep(s.start_s)
        messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        for turn, (user, think) in enumerate(zip(s.users, s.think_s, strict=True)):
            if loop.time() > deadline:
                return
            messages.append({"role": "user", "content": user})
            payload = {"model": MODEL, "messages": messages, "stream": True,
                       "stream_options": {"include_usage": True},
                       "max_tokens": args.max_tokens, "ignore_eos": True,
                       "temperature": 0}
            result = Result(s.sid, turn, ok=False)
            try:
                await router.send(http, payload, s.sid, result)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                result.ok = False
                result.error = f"{type(exc).__name__}: {exc}"[:200]
            results.append(result)
            if result.ok:
                messages.append({"role": "assistant", "content": result.text})
            else:
                messages.pop()
            await asyncio.sleep(think)

    # Straight to llama-server, a fresh connection per request: its idle keep-alive
    # connections close on a timer, and a request on one that just closed would fail.
    # (The hub has its own pool that handles this; loopback connects cost ~0.1 ms.)
    connector = aiohttp.TCPConnector(limit=0, force_close=isinstance(router, DirectRouter))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(converse(http, s) for s in sessions))
    return results


def hub_config(policy: str, servers: Sequence[LlamaServer], slots: int) -> dict[str, Any]:
    return {"routing": {"policy": policy, "max_attempts": 2},
            "health": {"interval_s": 0.5, "timeout_s": 2},
            "timeouts": {"first_byte_s": 300, "idle_s": 120, "total_s": 900},
            "admission": {"worker_queue_timeout_s": 300},
            # Slow-worker ejection is a separate mechanism: off, so only the policy differs.
            "resilience": {"outlier": {"max_ejected_fraction": 0}},
            "log_level": "warning",
            "workers": [{"name": s.name, "url": s.url, "kind": "llamacpp",
                         "max_concurrency": slots} for s in servers]}


def wait_healthy(hub: HubProcess, names: Sequence[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = hub.workers()
        if all(n in workers and workers[n]["healthy"] for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"workers {', '.join(names)} not healthy at the hub")


@dataclass
class Row:
    label: str
    results: list[Result]
    wall_s: float
    workers: list[str]
    note: str = ""


def run_policy(spec: str, args: argparse.Namespace, model: Path, workdir: Path, *,
               system: str, sessions: Sequence[Session]) -> Row:
    direct = spec.startswith("direct:")
    policy = spec.removeprefix("direct:")
    label = (f"{policy} (direct: client-side routing, no hub)" if direct
             else f"{policy} (hub)")
    servers = start_fleet(args, model, workdir)
    names = [s.name for s in servers]
    hub: HubProcess | None = None
    try:
        router: HubRouter | DirectRouter
        if direct:
            router = DirectRouter(policy, servers, args.slots, args.seed)
        else:
            hub = HubProcess(hub_config(policy, servers, args.slots), workdir,
                             {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
            try:
                hub.start()
            except (RuntimeError, TimeoutError):
                log = hub.proc.log().strip().splitlines()
                why = log[-1] if log else "no log"
                return Row(label, [], 0.0, names, note=f"not available: {why[:160]}")
            wait_healthy(hub, names)
            router = HubRouter(hub.url)
        start = time.monotonic()
        results = asyncio.run(run_sessions(router, system, sessions, args))
        return Row(label, results, time.monotonic() - start, names)
    finally:
        if hub is not None:
            hub.stop()
        stop_fleet(servers)


# -- report -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Summary:
    done: int
    failed: int
    cached: float
    p50_ms: float
    p99_ms: float
    spread: float
    per_worker: str
    reasons: str


def summarise(row: Row) -> Summary | None:
    ok = [r for r in row.results if r.ok]
    if not ok:
        return None
    cache_n = sum(r.cache_n for r in ok)
    prompt_n = sum(r.prompt_n for r in ok)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    served = Counter(r.worker for r in ok)
    counts = [served.get(name, 0) for name in row.workers]
    spread = max(counts) / min(counts) if min(counts) else math.inf
    reasons = Counter(r.reason for r in ok if r.reason)
    by_reason = []
    for reason, n in reasons.most_common():
        mine = [r for r in ok if r.reason == reason]
        cached = sum(r.cache_n for r in mine)
        total = cached + sum(r.prompt_n for r in mine)
        p50 = percentile([r.ttft_s for r in mine if r.ttft_s is not None], 0.5)
        by_reason.append(f"{reason} {n} ({cached / max(total, 1):.0%} cached, "
                         f"p50 {p50 * 1000:.0f} ms)")
    return Summary(len(ok), len(row.results) - len(ok),
                   cache_n / (cache_n + prompt_n) if cache_n + prompt_n else 0.0,
                   percentile(ttfts, 0.5) * 1000, percentile(ttfts, 0.99) * 1000, spread,
                   "/".join(map(str, counts)), ", ".join(by_reason))


def report(rows: Sequence[Row]) -> None:
    print()
    print(f"{'policy':<50} {'done':>4} {'fail':>4} {'cached':>7} {'TTFT p50':>9} "
          f"{'TTFT p99':>9} {'busiest/idlest':>15} {'wall':>6}")
    sums: dict[str, Summary] = {}
    for row in rows:
        s = summarise(row)
        if s is None:
            print(f"{row.label:<50} {row.note or 'no completed requests'}")
            continue
        sums[row.label] = s
        print(f"{row.label:<50} {s.done:4d} {s.failed:4d} {s.cached:7.1%} "
              f"{s.p50_ms:7.0f}ms {s.p99_ms:7.0f}ms {s.spread:5.2f} ({s.per_worker:>7}) "
              f"{row.wall_s:5.0f}s")
        if s.reasons:
            print(f"{'':<50} routes: {s.reasons}")
        errors = Counter(r.error for r in row.results if not r.ok)
        for error, n in errors.most_common(3):
            print(f"{'':<50} {n} x {error}")
    base = {p: next((s for label, s in sums.items() if label.startswith(p)), None)
            for p in ("round_robin", "least_loaded")}
    for label, s in sums.items():
        if not label.startswith("cache_aware"):
            continue
        print(f"\ntargets for {label}:")
        checks = [("cached-prompt ratio >= 80%", f"{s.cached:.1%}", s.cached >= 0.8),
                  ("busiest/idlest <= 1.5", f"{s.spread:.2f}", s.spread <= 1.5)]
        rr, ll = base["round_robin"], base["least_loaded"]
        if rr is not None:
            d50, d99 = 1 - s.p50_ms / rr.p50_ms, 1 - s.p99_ms / rr.p99_ms
            checks += [("TTFT p50 >= 70% below round_robin", f"{d50:.0%}", d50 >= 0.7),
                       ("TTFT p99 >= 40% below round_robin", f"{d99:.0%}", d99 >= 0.4)]
        if ll is not None:
            d50 = 1 - s.p50_ms / ll.p50_ms
            checks.append(("TTFT p50 >= 25% below least_loaded", f"{d50:.0%}", d50 >= 0.25))
        for what, value, met in checks:
            print(f"  {what:<36} {value:>7}  {'met' if met else 'NOT met'}")


def write_csv(path: Path, runs: Sequence[tuple[int, Row]]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["round", "policy", "session", "turn", "worker", "ok", "ttft_ms",
                      "prompt_n", "cache_n", "reason", "error"])
        for rnd, row in runs:
            for r in row.results:
                ttft = "" if r.ttft_s is None else f"{r.ttft_s * 1000:.1f}"
                out.writerow([rnd, row.label, r.session, r.turn, r.worker, int(r.ok), ttft,
                              r.prompt_n, r.cache_n, r.reason, r.error])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--policies", default="round_robin,least_loaded,cache_aware,"
                    "direct:cache_aware", help="comma-separated; direct:<policy> for "
                    "client-side routing without a hub")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2, help="llama-server -np (default 2)")
    ap.add_argument("--ctx", type=int, default=16384, help="llama-server -c, all slots")
    ap.add_argument("--cache-ram", type=int, metavar="MIB",
                    help="llama-server --cache-ram (host-memory prompt cache; default: the "
                         "server's own, 8192 MiB in this build)")
    ap.add_argument("--n-embd", type=int, default=512, help="model width (default 512)")
    ap.add_argument("--n-layer", type=int, default=2, help="model layers (default 2)")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--min-turns", type=int, default=6)
    ap.add_argument("--max-turns", type=int, default=10)
    ap.add_argument("--system-chars", type=int, default=3000)
    ap.add_argument("--user-chars", type=int, nargs=2, default=[600, 1500],
                    metavar=("MIN", "MAX"))
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    ap.add_argument("--think", type=float, nargs=2, default=[4.0, 12.0],
                    metavar=("MIN", "MAX"), help="seconds a user pauses between turns")
    ap.add_argument("--stagger", type=float, default=10.0,
                    help="sessions start within this many seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs per policy, in alternating order; results pooled")
    ap.add_argument("--run-limit-s", type=float, default=150.0,
                    help="per policy: no new turns after this long")
    ap.add_argument("--request-timeout-s", type=float, default=120.0)
    ap.add_argument("--keep-logs", type=Path, help="keep worker and hub logs here")
    ap.add_argument("--csv", type=Path, help="write one line per request here")
    args = ap.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    known = {"round_robin", "least_loaded", "vram_weighted", "cache_aware"}
    if not policies or any(p.removeprefix("direct:") not in known for p in policies):
        ap.error(f"policies: choose from {', '.join(sorted(known))}, optionally direct:")
    if not (1 <= args.workers <= 8 and 1 <= args.slots <= 8 and 1 <= args.sessions <= 64
            and 1 <= args.min_turns <= args.max_turns <= 20 and 1 <= args.max_tokens <= 256
            and 0 <= args.system_chars <= 20_000 and 1 <= args.user_chars[0]
            <= args.user_chars[1] <= 5000 and 0 <= args.think[0] <= args.think[1] <= 60
            and 10 <= args.run_limit_s <= 1800 and 64 <= args.n_embd <= 2048
            and 1 <= args.rounds <= 10
            and 1 <= args.n_layer <= 16 and 1024 <= args.ctx <= 262_144
            and (args.cache_ram is None or 0 <= args.cache_ram <= 65_536)):
        ap.error("keep it bounded (see --help for the defaults)")
    system, sessions = workload(args)
    turns = sum(len(s.users) for s in sessions)
    longest = max(len(system) + sum(len(u) for u in s.users) for s in sessions)
    workdir = Path(tempfile.mkdtemp(prefix="spokehub-cache-bench-"))
    try:
        model = bench_model(args.n_embd, args.n_layer)
        print(f"model: {model.name} ({args.n_embd} wide, {args.n_layer} layers, "
              f"{model.stat().st_size / 1e6:.0f} MB), llama-server -np {args.slots} -t 1 "
              f"-c {args.ctx}"
              + ("" if args.cache_ram is None else f" --cache-ram {args.cache_ram}")
              + f", {args.workers} workers")
        probe = LlamaServer("probe", model, workdir, 1, args.ctx)
        probe.start()
        try:
            probe.wait()
            print(f"prompt speed: {measure_prompt_speed(probe, 8000)}")
        finally:
            probe.stop()
        print(f"workload: {len(sessions)} sessions, {turns} turns, system prompt "
              f"{len(system)} chars shared, user turns {args.user_chars[0]}-"
              f"{args.user_chars[1]} chars, {args.max_tokens} tokens per answer, "
              f"pauses {args.think[0]:g}-{args.think[1]:g} s; longest history "
              f"~{longest} chars of user text and system prompt")
        runs: list[tuple[int, Row]] = []
        unavailable: set[str] = set()
        for rnd in range(args.rounds):
            # alternate the order, so that machine noise over time hits every policy
            for spec in policies if rnd % 2 == 0 else policies[::-1]:
                if spec in unavailable:
                    continue
                row = run_policy(spec, args, model, workdir, system=system,
                                 sessions=sessions)
                if row.note:
                    unavailable.add(spec)
                s = summarise(row)
                line = row.note or (f"{len(row.results)} requests in {row.wall_s:.0f} s" + (
                    "" if s is None else f", cached {s.cached:.1%}, TTFT p50 "
                    f"{s.p50_ms:.0f} ms p99 {s.p99_ms:.0f} ms, busiest/idlest {s.spread:.2f}"))
                print(f"  round {rnd + 1} {row.label}: {line}", flush=True)
                runs.append((rnd + 1, row))
        pooled: dict[str, Row] = {}
        for _, row in runs:
            into = pooled.setdefault(row.label, Row(row.label, [], 0.0, row.workers,
                                                    row.note))
            into.results.extend(row.results)
            into.wall_s += row.wall_s
        if args.rounds > 1:
            print(f"\nall {args.rounds} rounds pooled:")
        report(list(pooled.values()))
        if args.csv is not None:
            write_csv(args.csv, runs)
    finally:
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
