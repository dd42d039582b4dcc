"""routing.policy cache_aware through a real hub process, with real llama.cpp workers
(and the Ollama fake): conversations go where their prompt is cached, the answers say
why (X-Spokehub-Route), a busy or dead worker loses the conversation, /metrics counts.

The workers run with ``--cache-ram 0``: llama.cpp's host-memory prompt cache would let
any worker that once saw a conversation reuse it, which hides where turns went."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import workers_config
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.ollama_proc import OllamaFake

SYSTEM = ("You are a patient assistant for a small bicycle repair shop. Answer questions "
          "about gears, brakes, tyres and chains, and keep every answer short. " * 2)
TOPICS = ("my rear derailleur skips when I pedal hard uphill",
          "the front brake squeals after I washed the bike yesterday",
          "the chain looks rusty after a winter in the garage shed",
          "my tubeless tyre keeps losing pressure overnight for no reason",
          "the bottom bracket creaks on every pedal stroke in the cold")


def _turn_text(i: int) -> str:
    """A user turn of a few hundred characters, different for every turn."""
    return (f"Question {i + 1}: {TOPICS[i % len(TOPICS)]}. I have tried adjusting it "
            f"myself, step {i + 1}, but I am not sure what I am doing wrong. What should I "
            f"check first, and which tools do I need for it at home? " * 2)


def _config(*workers: LlamaWorker, policy: str = "cache_aware",
            **worker_opts: Any) -> dict[str, Any]:
    cfg = workers_config(*workers, routing={"policy": policy, "max_attempts": 3})
    for w in cfg["workers"]:
        w.update(worker_opts)
    return cfg


def _llama(make_llama: Callable[..., LlamaWorker], seed: int) -> LlamaWorker:
    return make_llama(seed=seed, ctx=8192, extra=["--cache-ram", "0"])


class Conversation:
    """One chat whose history grows by each question and its answer."""

    def __init__(self, hub: HubProcess, session: str | None = None) -> None:
        self.hub = hub
        self.messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
        self.headers = {"X-Session-ID": session} if session else {}
        self.turns = 0

    def say(self, **extra: Any) -> httpx.Response:
        self.messages.append({"role": "user", "content": _turn_text(self.turns)})
        self.turns += 1
        body = {"model": "tiny", "messages": self.messages, "max_tokens": 4,
                "temperature": 0, **extra}
        resp = httpx.post(f"{self.hub.base_url}/chat/completions", json=body,
                          headers=self.headers, timeout=60)
        assert resp.status_code == 200, resp.text
        answer = resp.json()["choices"][0]["message"]["content"]
        self.messages.append({"role": "assistant", "content": answer})
        return resp


def _reason(resp: httpx.Response) -> str:
    value = resp.headers["X-Spokehub-Route"]
    m = re.fullmatch(r"(prefix-hit|prefix-miss|session|repin|load); matched=(\d\.\d\d)",
                     value)
    assert m is not None, value
    return m.group(1)


def _decisions(hub: HubProcess) -> dict[str, float]:
    text = httpx.get(f"{hub.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for m in re.finditer(r'^spokehub_route_decisions_total\{policy="cache_aware",'
                         r'reason="([a-z-]+)"\} (\S+)$', text, re.MULTILINE):
        out[m.group(1)] = float(m.group(2))
    return out


def test_conversation_stays_where_its_prompt_is_cached(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a, b = _llama(make_llama, 0), _llama(make_llama, 1)
    hub = make_hub(_config(a, b))
    before = _decisions(hub)
    assert set(before) == {"prefix-hit", "prefix-miss", "session", "repin", "load"}
    talk = Conversation(hub)  # no session key: the prefix alone keeps it together
    answers = [talk.say() for _ in range(5)]
    workers = [r.headers["X-Spokehub-Worker"] for r in answers]
    reasons = [_reason(r) for r in answers]
    timings = [r.json()["timings"] for r in answers]
    assert len(set(workers)) == 1, workers
    assert all(r in ("prefix-hit", "session") for r in reasons[1:]), reasons
    assert all(t["cache_n"] > 0 for t in timings[1:]), timings
    after = _decisions(hub)
    moved = sum(after.values()) - sum(before.values())
    assert moved == 5, (before, after)
    assert after["prefix-hit"] - before["prefix-hit"] >= 4, (before, after)


def test_round_robin_alternates_and_loses_the_cache(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a, b = _llama(make_llama, 0), _llama(make_llama, 1)
    hub = make_hub(_config(a, b, policy="round_robin"))
    talk = Conversation(hub)
    answers = [talk.say() for _ in range(5)]
    workers = [r.headers["X-Spokehub-Worker"] for r in answers]
    assert workers[0] != workers[1] and workers[0] == workers[2], workers
    assert all("X-Spokehub-Route" not in r.headers for r in answers)
    timings = [r.json()["timings"] for r in answers]
    first_prompt = timings[0]["prompt_n"] + timings[0]["cache_n"]
    # Turn 2 went to the worker that never saw the conversation: it has at most what
    # every chat shares with it (the template's first tokens), not turn 1's prompt.
    assert timings[1]["cache_n"] < first_prompt // 2, timings
    assert any(t["cache_n"] < first_prompt // 2 for t in timings[1:]), timings


def test_busy_worker_loses_the_conversation(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    # Room for an answer longer than the sockets between worker, hub and client hold:
    # while the test does not read it, the hub cannot finish relaying it.
    a, b = (make_llama(seed=s, ctx=65536, extra=["--cache-ram", "0"]) for s in (0, 1))
    cfg = _config(a, b, max_concurrency=1)
    cfg["admission"] = {"max_tokens_cap": 30000}
    hub = make_hub(cfg)
    talk = Conversation(hub, session="busy-1")
    first = talk.say()
    home = first.headers["X-Spokehub-Worker"]
    assert _reason(talk.say()) == "session"
    # A long answer on the same session holds its worker's only slot (the hub's
    # max_concurrency) while the stream stays open.
    long_body = {"model": "tiny", "messages": [*talk.messages,
                                               {"role": "user", "content": "Tell a story."}],
                 "max_tokens": 30000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{hub.base_url}/chat/completions", json=long_body,
                      headers=talk.headers, timeout=60) as held:
        assert held.status_code == 200
        assert held.headers["X-Spokehub-Worker"] == home
        assert _reason(held) == "session"
        chunks = held.iter_raw()  # kept: dropping the iterator closes the stream
        next(chunks)  # the stream has started: the slot is taken
        moved = talk.say()
        assert next(chunks)  # and it was still running
    assert moved.headers["X-Spokehub-Worker"] != home
    assert _reason(moved) in ("repin", "load", "prefix-miss")


def test_killed_worker_repins_the_session(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    a, b = _llama(make_llama, 0), _llama(make_llama, 1)
    # Probes once a minute: the hub learns of the death from the failed attempt.
    cfg = _config(a, b)
    cfg["health"] = {"interval_s": 60, "timeout_s": 1}
    hub = make_hub(cfg)
    talk = Conversation(hub, session="kill-1")
    home = talk.say().headers["X-Spokehub-Worker"]
    assert _reason(talk.say()) == "session"
    {"w0": a, "w1": b}[home].kill()
    moved = talk.say()
    other = moved.headers["X-Spokehub-Worker"]
    assert other != home
    assert _reason(moved) == "repin"
    stays = talk.say()
    assert stays.headers["X-Spokehub-Worker"] == other
    assert _reason(stays) in ("session", "prefix-hit")
    assert stays.json()["timings"]["cache_n"] > 0


def test_ollama_sessions_stick(tmp_path_factory: pytest.TempPathFactory,
                               make_hub: Callable[..., HubProcess]) -> None:
    model = "llama3.2:3b"
    fakes = [OllamaFake(tmp_path_factory.mktemp("ollama"), models=[model], loaded=[model],
                        delay_s=0.001).start() for _ in range(2)]
    try:
        hub = make_hub({"health": {"interval_s": 0.5, "timeout_s": 1},
                        "routing": {"policy": "cache_aware"},
                        "workers": [{"name": f"o{i}", "url": f.url, "kind": "ollama"}
                                    for i, f in enumerate(fakes)]})
        deadline = time.monotonic() + 15
        while not all(w["healthy"] for w in hub.workers().values()):
            assert time.monotonic() < deadline, hub.workers()
            time.sleep(0.1)
        messages: list[dict[str, str]] = []
        seen: list[tuple[str, str]] = []
        for i in range(4):
            messages.append({"role": "user", "content": _turn_text(i)})
            resp = httpx.post(f"{hub.url}/api/chat", json={
                "model": model, "messages": messages, "stream": False},
                headers={"X-Session-ID": "ollama-1"}, timeout=30)
            assert resp.status_code == 200, resp.text
            messages.append(resp.json()["message"])
            seen.append((resp.headers["X-Spokehub-Worker"], _reason(resp)))
        assert len({w for w, _ in seen}) == 1, seen
        assert all(r == "session" for _, r in seen[1:]), seen
        # A streamed answer carries the header too.
        messages.append({"role": "user", "content": _turn_text(4)})
        with httpx.stream("POST", f"{hub.url}/api/chat", json={
                "model": model, "messages": messages},
                headers={"X-Session-ID": "ollama-1"}, timeout=30) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["X-Spokehub-Worker"] == seen[0][0]
            assert _reason(streamed) == "session"
            streamed.read()
    finally:
        for f in fakes:
            f.stop()
