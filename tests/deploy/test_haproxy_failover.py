"""A hub dies under load behind HAProxy: the clients see no failed non-stream request
beyond those in flight at the moment of the fault.

Real parts: Debian's HAProxy running deploy/several/haproxy.cfg (only the listen and
hub addresses changed to loopback ports), two hub processes, two real llama.cpp
workers, and a few client threads sending chat completions through HAProxy, each
one request at a time. Mid-load hub A gets SIGKILL (a crash) or SIGTERM (a drain).
The requests in flight at the fault are counted from the clients' side (each thread
has at most one); failures may not exceed that count, and HAProxy's retries
(conn-failure, empty-response, to the other hub) usually bring them to zero. Every
request after the fault is served by hub B.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_several import HAPROXY_CFG, haproxy
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.procs import Proc, free_port, wait_http

THREADS = 4
BEFORE_FAULT = 40  # successful requests before hub A is hit (both hubs serving)
AFTER_FAULT = 60  # successful requests after it
MAX_REQUESTS = 2000  # bound on the whole run
DEADLINE_S = 120.0
BODY = json.dumps({"model": "tiny", "max_tokens": 4,
                   "messages": [{"role": "user", "content": "Say something."}]}).encode()


def haproxy_config(port: int, hubs: dict[str, int]) -> str:
    """The shipped config with loopback addresses; nothing else changed."""
    text = HAPROXY_CFG.read_text()
    text, n = re.subn(r"^(\s*bind )\S+", rf"\g<1>127.0.0.1:{port}", text, flags=re.M)
    assert n == 1
    for name, hub_port in hubs.items():
        text, n = re.subn(rf"^(\s*server {name} )\S+", rf"\g<1>127.0.0.1:{hub_port}", text,
                          flags=re.M)
        assert n == 1
    return text


@dataclass
class Load:
    """Client threads, one request at a time each, keep-alive to HAProxy."""

    port: int
    ok: list[tuple[float, str]] = field(default_factory=list)  # (time, serving hub)
    failed: list[tuple[float, str]] = field(default_factory=list)
    in_flight: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def one(self, conn: http.client.HTTPConnection) -> tuple[bool, str]:
        try:
            conn.request("POST", "/v1/chat/completions", BODY,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return False, type(exc).__name__
        if resp.status != 200:
            return False, f"HTTP {resp.status}: {body[:200]!r}"
        return True, resp.headers.get("X-Spokehub-Worker", "?").split("-")[0]

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            while not self.stop.is_set():
                with self.lock:
                    if self.sent >= MAX_REQUESTS:
                        return
                    self.sent += 1
                    self.in_flight += 1
                ok, what = self.one(conn)
                with self.lock:
                    self.in_flight -= 1
                    (self.ok if ok else self.failed).append((time.monotonic(), what))
        finally:
            conn.close()

    def wait(self, pred: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not pred():
            assert time.monotonic() < deadline, f"{what} not within {DEADLINE_S:.0f}s"
            assert self.sent < MAX_REQUESTS, f"{what}: request bound reached"
            time.sleep(0.01)


@pytest.fixture
def stack(tmp_path: Path, llama_pair: tuple[LlamaWorker, LlamaWorker],
          ) -> Iterator[tuple[HubProcess, HubProcess, int, Proc]]:
    hubs: list[HubProcess] = []
    for name in ("a", "b"):  # worker names say which hub served: a-w0, b-w1, ...
        hubs.append(HubProcess({
            "health": {"interval_s": 0.5, "timeout_s": 1}, "shutdown_grace_s": 30,
            "workers": [{"name": f"{name}-w{i}", "url": w.url}
                        for i, w in enumerate(llama_pair)]}, tmp_path).start())
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, {"hub1": hubs[0].port, "hub2": hubs[1].port}))
    proxy = Proc([haproxy(), "-db", "-f", str(cfg)], tmp_path / "haproxy.log")
    proxy.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proxy.proc, timeout=DEADLINE_S)
        yield hubs[0], hubs[1], port, proxy
    finally:
        proxy.stop()
        for hub in hubs:
            hub.stop()


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_hub_fault_under_load_fails_no_request_beyond_those_in_flight(
        stack: tuple[HubProcess, HubProcess, int, Proc], fault: signal.Signals,
        record_property: Any) -> None:
    hub_a, hub_b, port, proxy = stack
    load = Load(port)
    threads = [threading.Thread(target=load.run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        load.wait(lambda: len(load.ok) >= BEFORE_FAULT and {"a", "b"} <= {h for _, h in load.ok},
                  "both hubs serving")
        on_a = sum(w["in_flight"] for w in hub_a.workers().values())  # a moment before
        with load.lock:
            in_flight_at_fault = load.in_flight
            fault_at = time.monotonic()
            hub_a.proc.signal(fault)
        load.wait(lambda: "Server hubs/hub1 is DOWN" in proxy.log(), "HAProxy marking A down")
        marked_down_at = time.monotonic()
        after = len(load.ok) + AFTER_FAULT
        load.wait(lambda: len(load.ok) >= after, "requests served after the fault")
    finally:
        load.stop.set()
        for t in threads:
            t.join(DEADLINE_S)
    if fault == signal.SIGTERM:
        assert hub_a.proc.proc is not None and hub_a.proc.proc.wait(DEADLINE_S) == 0
    failures = [what for at, what in load.failed if at >= fault_at]
    summary = (f"{fault.name}: {len(load.ok)} ok, {len(load.failed)} failed "
               f"({len(failures)} after the fault, {in_flight_at_fault} in flight at it, "
               f"{on_a} in flight on A just before)")
    print(summary)
    record_property("haproxy_failover", summary)
    assert not [f for at, f in load.failed if at < fault_at], load.failed
    assert len(failures) <= in_flight_at_fault <= THREADS, (summary, failures)
    # until HAProxy marks A down (its health checks), retries redispatch to B; after
    # that every request goes to B
    served_late = [h for at, h in load.ok if at > marked_down_at]
    assert len(served_late) >= AFTER_FAULT and set(served_late) == {"b"}, set(served_late)
    assert hub_b.proc.alive()
