"""Priority classes in a real hub with a full fleet (one fault worker, max_concurrency 1).

The worker holds requests at a gate until the test opens it, so the queue's contents
are set up by events (the hub's per-class waiting gauge), not by timing; the order
in which the hub let requests go is the order the worker received them
(``X-Request-ID``s it saw). The aging test runs a real interactive stream that keeps
the queue backlogged and waits for the batch request to finish while it still runs.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.observe import post, request_lines, scrape, wait_for

MakeHub = Callable[..., HubProcess]
MakeFault = Callable[..., FaultWorker]
DEADLINE_S = 60.0
MODEL = "fault-model"
ENV = "SPOKEHUB_TEST_PRIORITY_SECRET"
MESSAGES = [{"role": "user", "content": "Summarise the queue."}]


class Fleet:
    """A hub in front of one gated worker that takes one request at a time."""

    def __init__(self, make_fault: MakeFault, make_hub: MakeHub, *, auth: bool = False,
                 mode: str = "gate", delay_s: float = 0.01, **admission: Any) -> None:
        self.worker = make_fault(MODEL, mode=mode, delay_s=delay_s)
        config = workers_config(self.worker, admission={
            "worker_queue_timeout_s": 120, "batch_aging_s": 600, **admission})
        config["workers"][0]["max_concurrency"] = 1
        env: dict[str, str] = {}
        if auth:
            self.secret = secrets.token_urlsafe(48)
            env[ENV] = self.secret
            config["auth"] = {"enabled": True,
                              "keys": [{"kid": "k", "alg": "HS256", "secret_env": ENV}]}
            self.auth = parse_auth(config["auth"])
        self.hub = make_hub(config, env)
        self.results: dict[str, tuple[int, dict[str, str], dict[str, Any]]] = {}
        self.threads: list[threading.Thread] = []

    def token(self, tenant: str = "acme", **claims: Any) -> str:
        return issue_token(self.auth, tenant=tenant, scopes=["infer"], ttl_s=600,
                           environ={ENV: self.secret}, **claims)

    def post(self, rid: str, headers: dict[str, str] | None = None,
             path: str = "/v1/chat/completions",
             messages: list[dict[str, str]] | None = None,
             ) -> tuple[int, dict[str, str], dict[str, Any]]:
        body = {"model": MODEL, "max_tokens": 8,  # chat or Anthropic messages
                "messages": messages or MESSAGES}
        status, head, raw = post(f"{self.hub.url}{path}", body,
                                 {"X-Request-ID": rid, **(headers or {})})
        out = status, head, json.loads(raw) if raw else {}
        self.results[rid] = out
        return out

    def send(self, rid: str, headers: dict[str, str] | None = None,
             messages: list[dict[str, str]] | None = None) -> threading.Thread:
        t = threading.Thread(target=self.post, args=(rid, headers),
                             kwargs={"messages": messages}, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def waiting(self, klass: str) -> float:
        return scrape(self.hub).get("spokehub_worker_queue_waiting", **{"class": klass})

    def queue(self, rid: str, klass: str, headers: dict[str, str] | None = None,
              messages: list[dict[str, str]] | None = None) -> None:
        """Send a request and wait until the hub has queued it."""
        before = self.waiting(klass)
        self.send(rid, headers, messages)
        wait_for(lambda: self.waiting(klass) == before + 1, DEADLINE_S,
                 f"{rid} queued as {klass}")

    def block(self, headers: dict[str, str] | None = None) -> None:
        """Fill the worker's one slot with a request held at its gate."""
        self.send("block", headers)
        wait_for(lambda: self.worker.stats()["active"] == 1, DEADLINE_S,
                 "the first request at the worker")

    def release(self) -> None:
        self.worker.control(gate="open")
        for t in self.threads:
            t.join(DEADLINE_S)
        assert not any(t.is_alive() for t in self.threads)

    def served_order(self) -> list[str]:
        return [h.get("x-request-id", "") for h in self.worker.stats()["headers"]]


def test_interactive_goes_before_earlier_batch_of_the_same_tenant(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    fleet = Fleet(make_fault, make_hub)
    fleet.block()
    batch = {"X-Spokehub-Priority": "batch"}
    for i in range(3):
        fleet.queue(f"b{i}", "batch", batch)
    for i in range(3):
        fleet.queue(f"i{i}", "interactive")
    fleet.release()
    assert {rid: r[0] for rid, r in fleet.results.items()} == dict.fromkeys(
        ["block", "b0", "b1", "b2", "i0", "i1", "i2"], 200)
    assert fleet.served_order() == ["block", "i0", "i1", "i2", "b0", "b1", "b2"]
    after = scrape(fleet.hub)
    assert after.get("spokehub_worker_queue_wait_seconds_count", **{"class": "batch"}) == 3
    assert after.get("spokehub_worker_queue_wait_seconds_count",
                     **{"class": "interactive"}) == 3
    lines = {x["request_id"]: x for x in request_lines(fleet.hub)}
    assert lines["b0"]["priority"] == "batch" and lines["i0"]["priority"] == "interactive"


def test_batch_completes_under_a_steady_interactive_stream(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    """Three clients keep interactive requests waiting all the time; without aging the
    batch request would wait until they stop (and time out after 30 s). With
    ``batch_aging_s: 1`` it completes while they still run."""
    fleet = Fleet(make_fault, make_hub, mode="ok", delay_s=0.05, batch_aging_s=1,
                  worker_queue_timeout_s=30)
    stop = threading.Event()
    batch_done = threading.Event()
    overlapped: list[str] = []  # sent before the batch finished, answered after
    statuses: list[int] = []

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            sent_before = not batch_done.is_set()
            statuses.append(fleet.post(f"s{n}-{i}")[0])
            if sent_before and batch_done.is_set():
                overlapped.append(f"s{n}-{i}")
            i += 1

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
    for t in clients:
        t.start()
    try:
        wait_for(lambda: fleet.waiting("interactive") >= 1, DEADLINE_S,
                 "interactive requests waiting")
        status = fleet.post("batch", {"X-Spokehub-Priority": "batch"})[0]
        batch_done.set()
        wait_for(lambda: len(overlapped) >= 1, DEADLINE_S, "a stream request answered")
    finally:
        stop.set()
        for t in clients:
            t.join(DEADLINE_S)
    assert status == 200
    assert set(statuses) == {200}
    # the stream was still running: requests sent before the batch finished were
    # still waiting or in service when it did
    assert overlapped
    order = fleet.served_order()
    assert "batch" in order and order.index("batch") < len(order) - 1


def test_tenants_of_a_class_share_by_tokens_not_requests(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    """Two tenants queue batch requests, the one with ~4 KB prompts first. Fair
    queuing by estimated tokens lets the short-prompt tenant's requests go before the
    long one's second and third (FIFO would serve all three long ones first)."""
    fleet = Fleet(make_fault, make_hub, auth=True)
    long_t, short_t = fleet.token("long"), fleet.token("short")
    fleet.block({"Authorization": f"Bearer {short_t}"})
    long_prompt = [{"role": "user", "content": "word " * 800}]
    for i in range(3):
        fleet.queue(f"long{i}", "batch", {"Authorization": f"Bearer {long_t}",
                                          "X-Spokehub-Priority": "batch"}, long_prompt)
    for i in range(3):
        fleet.queue(f"short{i}", "batch", {"Authorization": f"Bearer {short_t}",
                                           "X-Spokehub-Priority": "batch"})
    fleet.release()
    assert {r[0] for r in fleet.results.values()} == {200}
    # long0 and short0 both start at the class's virtual time (arrival breaks the
    # tie); each long prompt then costs ~1000 tokens of its tenant's share, a short
    # one ~30
    assert fleet.served_order() == ["block", "long0", "short0", "short1", "short2",
                                    "long1", "long2"]


def test_sheddable_is_refused_first_with_retry_after(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    fleet = Fleet(make_fault, make_hub, worker_queue_max=3, worker_queue_sheddable_max=1)
    fleet.block()
    shed = {"X-Spokehub-Priority": "sheddable"}
    fleet.queue("s1", "sheddable", shed)
    status, headers, body = fleet.post("s2", shed)  # at the sheddable threshold
    assert status == 503 and body["error"]["code"] == "shed"
    assert int(headers["retry-after"]) >= 1
    fleet.queue("b1", "batch", {"X-Spokehub-Priority": "batch"})
    fleet.queue("i1", "interactive")  # the queue is full now
    fleet.queue("i2", "interactive")  # ... so this one takes s1's place
    wait_for(lambda: "s1" in fleet.results, DEADLINE_S, "s1 shed")
    status, headers, body = fleet.results["s1"]
    assert status == 503 and body["error"]["code"] == "shed"
    assert int(headers["retry-after"]) >= 1
    status, headers, body = fleet.post("b2", {"X-Spokehub-Priority": "batch"})
    assert status == 503 and body["error"]["code"] == "workers_busy"  # nothing to shed
    assert "retry-after" in headers
    after = scrape(fleet.hub)
    assert after.get("spokehub_worker_queue_shed_total", **{"class": "sheddable"}) == 2
    assert after.get("spokehub_admission_rejected_total", tenant="default",
                     reason="shed") == 2
    fleet.release()
    assert [fleet.results[r][0] for r in ("block", "i1", "i2", "b1")] == [200] * 4
    assert fleet.served_order() == ["block", "i1", "i2", "b1"]


def test_the_header_needs_the_tokens_permission(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    fleet = Fleet(make_fault, make_hub, mode="ok", auth=True,
                  tenants={"acme": {"priority": "batch"}})
    tenant_batch = fleet.token()  # class from the tenant's setting
    claimed = fleet.token(priority="sheddable")
    allowed = fleet.token(priority="batch", priorities=["interactive"])

    def ask(rid: str, token: str, klass: str | None,
            path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        if klass is not None:
            headers["X-Spokehub-Priority"] = klass
        status, _, body = fleet.post(rid, headers, path)
        return status, body

    status, body = ask("up", tenant_batch, "interactive")
    assert status == 403 and body["error"]["code"] == "priority_not_allowed"
    status, body = ask("up2", claimed, "batch")
    assert status == 403 and body["error"]["code"] == "priority_not_allowed"
    status, body = ask("anthropic", tenant_batch, "interactive", "/v1/messages")
    assert status == 403 and body["type"] == "error"  # the caller's API shape
    assert body["error"]["type"] == "permission_error"
    status, body = ask("bad", allowed, "urgent")
    assert status == 400 and body["error"]["code"] == "invalid_priority"
    for rid, token, klass in (("own", tenant_batch, None), ("down", tenant_batch, "sheddable"),
                              ("claim", claimed, None), ("granted", allowed, "interactive")):
        assert ask(rid, token, klass)[0] == 200, rid

    def logged() -> dict[str, str] | None:
        got = {x["request_id"]: x["priority"] for x in request_lines(fleet.hub)
               if x["status"] == 200}
        return got if len(got) == 4 else None

    lines = wait_for(logged, DEADLINE_S, "four log lines")
    assert lines == {"own": "batch", "down": "sheddable", "claim": "sheddable",
                     "granted": "interactive"}


def test_a_freed_slot_goes_to_a_waiter_for_that_model(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    """One queue holds every model's waiters: when a slot frees for model a, an
    interactive waiter for model b (whose worker is still busy) does not take the
    wake-up and strand it; the batch waiter for a goes."""
    wa, wb = make_fault("a", mode="gate"), make_fault("b", mode="gate")
    config = workers_config(wa, wb, admission={"worker_queue_timeout_s": 30,
                                                "batch_aging_s": 600})
    for w in config["workers"]:
        w["max_concurrency"] = 1
    hub = make_hub(config)
    results: dict[str, int] = {}

    def send(rid: str, model: str, klass: str) -> threading.Thread:
        def run() -> None:
            results[rid] = post(f"{hub.url}/v1/chat/completions",
                                {"model": model, "max_tokens": 4, "messages": MESSAGES},
                                {"X-Request-ID": rid, "X-Spokehub-Priority": klass})[0]
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def waiting(klass: str) -> float:
        return scrape(hub).get("spokehub_worker_queue_waiting", **{"class": klass})

    threads = [send("a-block", "a", "batch"), send("b-block", "b", "batch")]
    wait_for(lambda: wa.stats()["active"] == 1 and wb.stats()["active"] == 1, DEADLINE_S,
             "both workers busy")
    threads.append(send("b-wait", "b", "interactive"))
    wait_for(lambda: waiting("interactive") == 1, DEADLINE_S, "b-wait queued")
    threads.append(send("a-wait", "a", "batch"))
    wait_for(lambda: waiting("batch") == 1, DEADLINE_S, "a-wait queued")
    wa.control(gate="open")
    wait_for(lambda: "a-wait" in results, DEADLINE_S, "a-wait answered")
    assert results == {"a-block": 200, "a-wait": 200}
    assert waiting("interactive") == 1  # b-wait still holds its place
    wb.control(gate="open")
    for t in threads:
        t.join(DEADLINE_S)
    assert results == dict.fromkeys(["a-block", "a-wait", "b-block", "b-wait"], 200)
