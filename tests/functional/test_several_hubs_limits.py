"""Two real hub processes sharing one real redis-server (``state.backend: redis``): a
tenant's rate limit holds across both hubs combined, a worker's ``max_concurrency``
counts both hubs' requests, and a conversation whose turns alternate between the hubs
keeps hitting the real llama.cpp worker that holds its prompt.

These need the hub's Redis link to call ``hub.state.attach.attach_shared_limits``; they
are skipped in a tree where it does not."""

from __future__ import annotations

import concurrent.futures
import inspect
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import hub.server.app
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.redis_proc import RedisServer

WIRED = "attach_shared_limits" in inspect.getsource(hub.server.app)
pytestmark = pytest.mark.skipif(not WIRED, reason="the hub does not attach the shared "
                                "limits to its Redis link in this tree")

SYSTEM = ("You are a patient assistant for a small bicycle repair shop. Answer questions "
          "about gears, brakes, tyres and chains, and keep every answer short. " * 2)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


def metric(hub: HubProcess, name: str, labels: str = "") -> float | None:
    text = httpx.get(f"{hub.url}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return None if m is None else float(m.group(1))


def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def two_hubs(make_hub: Callable[..., HubProcess], redis: RedisServer,
             config: dict[str, Any], on_outage: str = "open") -> tuple[HubProcess, HubProcess]:
    cfg = {**config, "state": {"backend": "redis", "namespace": f"fleet{redis.port}",
                               "rate_limits_on_outage": on_outage}}
    env = {"SPOKEHUB_REDIS_URL": redis.url}
    a, b = make_hub(cfg, env), make_hub(cfg, env)
    for h in (a, b):
        until(lambda h=h: metric(h, "spokehub_state_backend_up") == 1.0,  # type: ignore[misc]
              "the hub's link to Redis")
        assert metric(h, "spokehub_shared_prefix_entries_adopted_total") is not None
    return a, b


def chat(hub: HubProcess, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    body = body or {"model": "fault-model", "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{hub.base_url}/chat/completions", json=body, headers=headers or {},
                      timeout=60)


def test_a_tenants_rate_limit_holds_across_both_hubs(
        make_hub: Callable[..., HubProcess], make_fault: Callable[..., FaultWorker],
        redis: RedisServer) -> None:
    worker = make_fault()
    a, b = two_hubs(make_hub, redis, workers_config(
        worker, admission={"requests_per_s": 0.2, "burst": 4, "queue_timeout_s": 0}))
    for h in (a, b):
        until(lambda h=h: h.workers()["w0"]["healthy"], "the worker")  # type: ignore[misc]
    started = time.monotonic()
    statuses: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(16):
        name, h = ("a", a) if i % 2 == 0 else ("b", b)
        resp = chat(h)
        assert resp.status_code in (200, 429), resp.text
        if resp.status_code == 429:
            assert int(resp.headers["Retry-After"]) >= 1
        statuses[name].append(resp.status_code)
    elapsed = time.monotonic() - started
    ok = sum(s == 200 for s in statuses["a"] + statuses["b"])
    # one bucket for both hubs: its burst plus what refilled meanwhile (within one
    # token); two hubs limiting alone would have admitted 8 at once
    assert 4 <= ok <= 4 + 0.2 * elapsed + 1, (statuses, elapsed)
    assert 429 in statuses["a"] and 429 in statuses["b"], statuses
    assert 200 in statuses["a"] and 200 in statuses["b"], statuses
    for h in (a, b):
        assert metric(h, "spokehub_shared_rate_limit_fallbacks_total",
                      '{on_outage="open"}') == 0.0


@pytest.mark.parametrize("on_outage", ["open", "closed"])
def test_redis_outage_limits_fail_open_or_closed(
        make_hub: Callable[..., HubProcess], make_fault: Callable[..., FaultWorker],
        redis: RedisServer, on_outage: str) -> None:
    worker = make_fault()
    a, b = two_hubs(make_hub, redis, workers_config(
        worker, admission={"requests_per_s": 0.01, "burst": 2, "queue_timeout_s": 0}),
        on_outage)
    for h in (a, b):
        until(lambda h=h: h.workers()["w0"]["healthy"], "the worker")  # type: ignore[misc]
    assert chat(a).status_code == 200
    assert chat(b).status_code == 200
    assert chat(a).status_code == 429  # the shared burst of 2 is spent
    redis.kill()
    fallbacks = "spokehub_shared_rate_limit_fallbacks_total"
    resp = chat(a)
    if on_outage == "open":
        # the hub's own bucket (still full: it never limited alone) admits it
        assert resp.status_code == 200, resp.text
        assert chat(a).status_code == 200
        assert chat(a).status_code == 429  # and limits alone: its own burst of 2
    else:
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "rate_limiter_unavailable"
        assert resp.headers["Retry-After"] == "1"
    assert (metric(a, fallbacks, f'{{on_outage="{on_outage}"}}') or 0.0) >= 1.0
    redis.start()  # empty, on the same port: the hubs reconnect to fresh buckets
    for h in (a, b):
        until(lambda h=h: metric(h, "spokehub_state_backend_up") == 1.0,  # type: ignore[misc]
              "the links to come back")
    assert chat(a).status_code == 200
    assert chat(b).status_code == 200
    assert chat(a).status_code == 429


def test_max_concurrency_counts_both_hubs_requests(
        make_hub: Callable[..., HubProcess], make_fault: Callable[..., FaultWorker],
        redis: RedisServer) -> None:
    worker = make_fault(mode="gate")
    cfg = workers_config(worker, admission={"worker_queue_max": 0})
    cfg["workers"][0]["max_concurrency"] = 1
    a, b = two_hubs(make_hub, redis, cfg)
    for h in (a, b):
        until(lambda h=h: h.workers()["w0"]["healthy"], "the worker")  # type: ignore[misc]
    remote = '{worker="w0"}'
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, a)  # waits at the worker's gate: hub A's one slot
        until(lambda: metric(b, "spokehub_worker_remote_in_flight", remote) == 1.0,
              "hub B to count hub A's request")
        busy = chat(b)
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "workers_busy"
        worker.control(gate="open")
        assert held.result(timeout=60).status_code == 200
    until(lambda: metric(b, "spokehub_worker_remote_in_flight", remote) == 0.0,
          "hub A's request to end at hub B")
    assert chat(b).status_code == 200


class Conversation:
    """One chat whose history grows by each question and its answer."""

    def __init__(self, session: str | None = None) -> None:
        self.messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
        self.headers = {"X-Session-ID": session} if session else {}
        self.turns = 0

    def say(self, hub: HubProcess) -> httpx.Response:
        self.turns += 1
        self.messages.append({"role": "user", "content": (
            f"Question {self.turns}: my chain skips on the small cog, step {self.turns}. "
            f"What should I check first, and which tools do I need at home? " * 2)})
        resp = chat(hub, {"model": "tiny", "messages": self.messages, "max_tokens": 4,
                          "temperature": 0}, self.headers)
        assert resp.status_code == 200, resp.text
        self.messages.append({"role": "assistant",
                              "content": resp.json()["choices"][0]["message"]["content"]})
        return resp


@pytest.mark.parametrize("session", [None, "conv-7"])
def test_a_conversation_alternating_between_hubs_keeps_its_worker(
        make_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        redis: RedisServer, session: str | None) -> None:
    # --cache-ram 0: llama.cpp's host-memory prompt cache would let any worker that
    # once saw the conversation reuse it, which hides where turns went
    w0 = make_llama(seed=0, ctx=8192, extra=["--cache-ram", "0"])
    w1 = make_llama(seed=1, ctx=8192, extra=["--cache-ram", "0"])
    a, b = two_hubs(make_hub, redis, workers_config(
        w0, w1, routing={"policy": "cache_aware", "max_attempts": 3}))
    for h in (a, b):
        until(lambda h=h: all(w["healthy"] for w in h.workers().values()),  # type: ignore[misc]
              "the workers")
    adopted = "spokehub_shared_prefix_entries_adopted_total"
    talk = Conversation(session)
    answers = []
    for turn in range(6):
        hub, other = (a, b) if turn % 2 == 0 else (b, a)
        # A conversation's next turn comes after its answer was read: by then both hubs'
        # probes have seen the last turn's slot free again. (A slot reading taken while
        # the last turn ran counts as load until the next probe, up to
        # health.interval_s, and load may rightly move a turn elsewhere.)
        until(lambda: all(w["in_flight"] == 0 and not w["slots_busy"]
                          for h in (a, b) for w in h.workers().values()),
              "both hubs to see the workers idle")
        before = metric(other, adopted) or 0.0
        answers.append(talk.say(hub))
        # the other hub has the turn in its prefix map before the next turn comes
        until(lambda o=other, n=before: (metric(o, adopted) or 0.0) > n,  # type: ignore[misc]
              "the other hub to adopt the turn")
    workers = [r.headers["X-Spokehub-Worker"] for r in answers]
    reasons = [r.headers["X-Spokehub-Route"].split(";")[0] for r in answers]
    cached = [r.json()["timings"]["cache_n"] for r in answers]
    assert len(set(workers)) == 1, (workers, [r.headers["X-Spokehub-Route"] for r in answers])
    assert all(r in ("prefix-hit", "session") for r in reasons[1:]), reasons
    assert all(n > 0 for n in cached[1:]), cached
