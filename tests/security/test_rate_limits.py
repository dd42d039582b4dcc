"""Per-tenant admission end to end: token buckets, the bounded wait queue, request caps.

One hub process with JWT auth (the tenant comes from the token) in front of a
recording upstream, so the tests can see what a worker actually received. Each
test uses tenants of its own, so bucket state never leaks between tests.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest

from tests.security.support import (
    AUDIENCE,
    ISSUER,
    Reply,
    assert_openai_error,
    chat,
    claims,
    hmac_secret,
    read_response,
    request,
    sign,
    wait_until,
)
from tests.security.upstream import RecordingUpstream
from tests.support.hubproc import HubProcess

ENV = "SPOKEHUB_SEC_RL_SECRET"
MODEL = "rec-model"
TENANTS: dict[str, dict[str, Any]] = {
    "burst": {"requests_per_s": 2, "burst": 5, "max_queue": 0},
    "retry": {"requests_per_s": 0.5, "burst": 2, "max_queue": 0},
    "noisy": {"requests_per_s": 1, "burst": 1, "max_queue": 0},
    "quiet": {"requests_per_s": 5, "burst": 5, "max_queue": 0},
    "shared": {"requests_per_s": 0.5, "burst": 2, "max_queue": 0},
    "queued": {"requests_per_s": 1, "burst": 1, "max_queue": 2, "queue_timeout_s": 5},
    "cancel": {"requests_per_s": 1, "burst": 1, "max_queue": 1, "queue_timeout_s": 5},
    "impatient": {"requests_per_s": 0.2, "burst": 1, "max_queue": 10, "queue_timeout_s": 1},
    "budget": {"tokens_per_min": 600, "max_tokens_cap": 100, "queue_timeout_s": 1},
    "budget-n": {"tokens_per_min": 600, "max_tokens_cap": 100, "queue_timeout_s": 1},
    "huge-n": {"tokens_per_min": 600, "max_tokens_cap": 100, "queue_timeout_s": 1},
    "capped": {"max_messages": 3, "max_prompt_chars": 100, "max_tokens_cap": 16},
}
_ids = count()


@dataclass
class RateHub:
    hub: HubProcess
    upstream: RecordingUpstream
    secret: str

    @property
    def port(self) -> int:
        return self.hub.port

    def token(self, tenant: str, **extra: Any) -> str:
        return sign(claims(tenant, "infer", **extra), self.secret, "HS256", "rl")

    def send(self, tenant: str, path: str = "/v1/chat/completions",
             body: dict[str, Any] | None = None, *, rid: str | None = None,
             **fields: Any) -> Reply:
        if body is None:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
        headers = {"X-Request-ID": rid} if rid else None
        return request(self.port, "POST", path, body, headers, token=self.token(tenant))

    def received(self, rid: str) -> dict[str, Any] | None:
        """The body the upstream got for request id ``rid`` (None if it got nothing)."""
        for entry in self.upstream.seen():
            if entry["headers"].get("X-Request-ID") == rid:
                doc: dict[str, Any] = json.loads(entry["body"])
                return doc
        return None


@pytest.fixture(scope="module")
def rh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RateHub]:
    tmp = tmp_path_factory.mktemp("ratelimit")
    upstream = RecordingUpstream(tmp, (MODEL,)).start()
    secret = hmac_secret()
    config = {
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "auth": {"enabled": True, "audience": AUDIENCE, "issuer": ISSUER,
                 "keys": [{"kid": "rl", "alg": "HS256", "secret_env": ENV}]},
        "admission": {"tenants": TENANTS},
        "workers": [{"name": "rec", "url": upstream.url}],
    }
    hub = HubProcess(config, tmp, {ENV: secret})
    try:
        hub.start()
        env = RateHub(hub, upstream, secret)
        wait_until(lambda: env.send("warmup").status == 200)
        yield env
    finally:
        hub.stop()
        upstream.stop()


def rid() -> str:
    return f"rl-{next(_ids)}-{time.monotonic_ns()}"


def retry_after(reply: Reply) -> int:
    """The 429's Retry-After, checked to be a whole number of seconds >= 1."""
    assert_openai_error(reply, 429, "rate_limit_exceeded")
    assert reply.json()["error"]["type"] == "rate_limit_error"
    value = reply.header("retry-after")
    assert value is not None and value.isdigit(), reply.headers
    assert int(value) >= 1
    return int(value)


# -- token buckets -------------------------------------------------------------------------

def test_burst_then_sustained_rate(rh: RateHub) -> None:
    """rate 2/s, burst 5: five at once, then two a second, every refusal a proper 429."""
    start = time.monotonic()
    first = [rh.send("burst") for _ in range(8)]
    burst_s = time.monotonic() - start
    assert [r.status for r in first[:5]] == [200] * 5
    assert sum(r.status == 200 for r in first) <= 5 + math.floor(2 * burst_s)
    for r in first:
        if r.status == 429:
            assert retry_after(r) == 1  # at 2/s the next token is < 0.5 s away

    statuses = [r.status for r in first]
    while time.monotonic() - start < 3.0:  # sustained: one try every 50 ms
        reply = rh.send("burst")
        statuses.append(reply.status)
        if reply.status == 429:
            assert retry_after(reply) == 1
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    assert set(statuses) == {200, 429}
    admitted = statuses.count(200)
    # bucket math: 5 up front plus 2 per second, minus at most one token still refilling
    assert 5 + 2 * elapsed - 2 <= admitted <= 5 + 2 * elapsed + 0.5, (admitted, elapsed)


def test_retry_after_is_exact_and_honoured(rh: RateHub) -> None:
    """rate 0.5/s: the 429 says 2 s, and after 2 s the request goes through."""
    assert [rh.send("retry").status for _ in range(2)] == [200, 200]
    refused = rh.send("retry")
    assert retry_after(refused) == 2
    time.sleep(2.0)
    assert rh.send("retry").status == 200
    assert retry_after(rh.send("retry")) == 2


def test_tenants_are_isolated(rh: RateHub) -> None:
    """A tenant flooding at once does not touch another tenant's budget."""
    stop = time.monotonic() + 1.5

    def flood() -> list[int]:
        out = []
        while time.monotonic() < stop:
            out.append(rh.send("noisy").status)
        return out

    with ThreadPoolExecutor(4) as pool:
        floods = [pool.submit(flood) for _ in range(4)]
        time.sleep(0.1)
        quiet = []
        for _ in range(5):  # within quiet's own burst of 5
            quiet.append(rh.send("quiet").status)
            time.sleep(0.15)
        bystander = [rh.send("bystander").status for _ in range(10)]  # default: unlimited
        noisy = [s for f in floods for s in f.result()]
    assert quiet == [200] * 5
    assert bystander == [200] * 10
    assert set(noisy) == {200, 429}
    assert noisy.count(200) <= 1 + 1 * 1.6 + 1  # burst 1 plus 1/s over the flood
    assert noisy.count(429) >= 10


def test_bucket_is_per_tenant_not_per_token(rh: RateHub) -> None:
    """Two keys of one tenant share its bucket; a token without a tenant claim is its sub."""
    a = sign(claims("shared", sub="alice"), rh.secret, "HS256", "rl")
    b = sign(claims("shared", sub="bob"), rh.secret, "HS256", "rl")
    no_tenant = claims("shared", sub="shared")
    del no_tenant["tenant"]
    c = sign(no_tenant, rh.secret, "HS256", "rl")
    assert chat(rh.port, a).status == 200
    assert chat(rh.port, b).status == 200
    for tok in (a, b, c):
        retry_after(chat(rh.port, tok))


# -- the wait queue --------------------------------------------------------------------------

def test_queue_bound(rh: RateHub) -> None:
    """rate 1/s, max_queue 2: two requests wait their turn (about 1 s and 2 s), the rest
    are refused at once."""
    assert rh.send("queued").status == 200
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: rh.send("queued"), range(4)))
    ok = sorted(r.seconds for r in replies if r.status == 200)
    refused = [r for r in replies if r.status != 200]
    assert len(ok) == 2 and len(refused) == 2, [r.status for r in replies]
    for r in refused:
        assert 2 <= retry_after(r) <= 3
        assert r.seconds < 0.5, "a refusal must not wait"
        assert "already waiting" in r.json()["error"]["message"]
    assert 0.5 <= ok[0] <= 1.6, ok
    assert 1.5 <= ok[1] <= 3.0, ok


def test_queue_timeout(rh: RateHub) -> None:
    """rate 0.2/s, queue_timeout 1 s: a request that would wait 5 s is refused at once."""
    assert rh.send("impatient").status == 200
    reply = rh.send("impatient")
    assert 4 <= retry_after(reply) <= 5
    assert reply.seconds < 0.5


def test_cancelled_waiter_frees_its_queue_place(rh: RateHub) -> None:
    """A client that hangs up while queued gives back its place and its token."""
    assert rh.send("cancel").status == 200
    body = (b'{"model": "rec-model", "messages": [{"role": "user", "content": "x"}]}')
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
            f"Authorization: Bearer {rh.token('cancel')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", rh.port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        time.sleep(0.2)  # now queued (the only place in this tenant's queue)
    time.sleep(0.2)
    reply = rh.send("cancel")
    assert reply.status == 200, reply.body  # queued in the freed place, not refused
    assert reply.seconds < 1.0, "the hung-up request's token was not refunded"


def test_waiting_client_gets_its_answer(rh: RateHub) -> None:
    """A queued request on a raw socket is answered once its turn comes."""
    assert rh.send("queued-raw").status == 200  # unlimited default tenant: no waiting
    with socket.create_connection(("127.0.0.1", rh.port), timeout=10) as sock:
        body = b'{"model": "rec-model", "messages": [{"role": "user", "content": "x"}]}'
        sock.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
                      f"Authorization: Bearer {rh.token('queued-raw')}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        reply = read_response(sock)
    assert reply is not None and reply.status == 200


# -- the completion-token budget -----------------------------------------------------------

def test_tokens_per_min_budget(rh: RateHub) -> None:
    """600 tokens/min, max_tokens capped at 100: six full requests, then a 429 that says
    when 100 tokens will be back (10 s at 10 tokens/s)."""
    start = time.monotonic()
    assert [rh.send("budget", max_tokens=100).status for _ in range(3)] == [200] * 3
    assert rh.send("budget").status == 200  # no max_tokens: charged the cap
    assert [rh.send("budget", max_tokens=5000).status for _ in range(2)] == [200] * 2
    reply = rh.send("budget", max_tokens=100)
    elapsed = time.monotonic() - start
    assert 10 - elapsed - 1 <= retry_after(reply) <= 10
    # a small request still fits once a few tokens have refilled
    time.sleep(0.6)
    assert rh.send("budget", max_tokens=5).status == 200


def test_tokens_per_min_counts_n(rh: RateHub) -> None:
    """n choices cost n times max_tokens."""
    assert [rh.send("budget-n", max_tokens=100, n=3).status for _ in range(2)] == [200, 200]
    retry_after(rh.send("budget-n", max_tokens=100, n=3))


def test_huge_n_is_not_a_500(rh: RateHub) -> None:
    """Bug: max_tokens * n is charged to the token bucket as a float; an n beyond float
    range (10**400 is valid JSON) raises OverflowError in TokenBucket.reserve: a 500."""
    reply = rh.send("huge-n", max_tokens=10, n=10 ** 400)
    assert reply.status < 500, reply.body[:200]


# -- request caps --------------------------------------------------------------------------

def _msgs(n: int, text: str = "x") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text} for _ in range(n)]


def test_max_messages(rh: RateHub) -> None:
    r = rid()
    err = assert_openai_error(rh.send("capped", messages=_msgs(4), rid=r), 400,
                              "too_many_messages")
    assert err["param"] == "messages" and "at most 3" in err["message"]
    assert rh.received(r) is None
    assert rh.send("capped", messages=_msgs(3)).status == 200
    assert rh.send("uncapped", messages=_msgs(50)).status == 200


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a" * 101}]},
     "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a" * 60}, {"type": "text", "text": "b" * 41}]}]}, "messages"),
    ("/v1/chat/completions", {"messages": [
        {"role": "user", "content": "a" * 51},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": "{" + "x" * 48 + "}"}}]}]}, "messages"),
    ("/v1/completions", {"prompt": "a" * 101}, "prompt"),
    ("/v1/completions", {"prompt": ["a" * 50, "b" * 51]}, "prompt"),
    ("/v1/embeddings", {"input": ["a" * 50, "b" * 51]}, "input"),
])
def test_max_prompt_chars(rh: RateHub, path: str, body: dict[str, Any], param: str) -> None:
    r = rid()
    reply = rh.send("capped", path, {"model": MODEL, **body}, rid=r)
    err = assert_openai_error(reply, 413, "prompt_too_long")
    assert err["param"] == param and "at most 100" in err["message"]
    assert rh.received(r) is None


def test_prompt_at_the_cap_passes(rh: RateHub) -> None:
    assert rh.send("capped", messages=[{"role": "user", "content": "a" * 100}]).status == 200
    assert rh.send("capped", "/v1/embeddings", {"model": MODEL, "input": "a" * 100}).status == 200


@pytest.mark.parametrize(("sent", "expected"), [
    ({"max_tokens": 1000}, {"max_tokens": 16}),
    ({}, {"max_tokens": 16}),  # absent: set to the cap
    ({"max_tokens": 8}, {"max_tokens": 8}),  # below the cap: untouched
    ({"max_tokens": 16.0}, {"max_tokens": 16}),
    ({"max_tokens": 10 ** 30}, {"max_tokens": 16}),
    ({"max_completion_tokens": 5000}, {"max_completion_tokens": 16, "max_tokens": None}),
    ({"n_predict": -1}, {"n_predict": 16, "max_tokens": None}),  # llama.cpp's "unlimited"
    ({"max_tokens": 1000, "stream": True}, {"max_tokens": 16}),
    ({"max_tokens": 1000, "temperature": 0.5, "stop": ["\n"]},
     {"max_tokens": 16, "temperature": 0.5, "stop": ["\n"]}),
])
def test_max_tokens_cap_clamps_what_the_worker_receives(
        rh: RateHub, sent: dict[str, Any], expected: dict[str, Any]) -> None:
    r = rid()
    reply = rh.send("capped", rid=r, **sent)
    assert reply.status == 200, reply.body
    got = rh.received(r)
    assert got is not None
    for name, value in expected.items():
        assert got.get(name) == value, (name, got)
    assert got["model"] == MODEL and got["messages"] == [{"role": "user", "content": "hi"}]


def test_max_tokens_cap_on_completions_not_embeddings(rh: RateHub) -> None:
    r1, r2 = rid(), rid()
    assert rh.send("capped", "/v1/completions", {"model": MODEL, "prompt": "x",
                                                 "max_tokens": 500}, rid=r1).status == 200
    assert rh.send("capped", "/v1/embeddings", {"model": MODEL, "input": "x"},
                   rid=r2).status == 200
    got1, got2 = rh.received(r1), rh.received(r2)
    assert got1 is not None and got1["max_tokens"] == 16
    assert got2 is not None and "max_tokens" not in got2


def test_caps_are_per_tenant(rh: RateHub) -> None:
    r = rid()
    assert rh.send("uncapped", rid=r, max_tokens=1000).status == 200
    got = rh.received(r)
    assert got is not None and got["max_tokens"] == 1000


@pytest.mark.parametrize("value", ["12", True, [16], {"n": 1}, 1.5])
def test_bad_max_tokens_is_400(rh: RateHub, value: Any) -> None:
    r = rid()
    err = assert_openai_error(rh.send("capped", rid=r, max_tokens=value), 400)
    assert err["param"] == "max_tokens"
    assert rh.received(r) is None
