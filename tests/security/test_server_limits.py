"""Server limits at the connection level: oversized heads are a 4xx, slow or idle clients
do not starve anyone, and the hub stays up. Every test here is over in a few seconds;
tests/functional/test_server_limits.py waits out the 10 s request-head timeout itself.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.security.support import Reply, chat, raw, read_response, request, wait_until
from tests.security.upstream import RecordingUpstream
from tests.support.hubproc import HubProcess

MODEL = "rec-model"
CHAT = b'{"model":"rec-model","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    tmp = tmp_path_factory.mktemp("limits")
    upstream = RecordingUpstream(tmp, (MODEL,)).start()
    h = HubProcess({"health": {"interval_s": 0.5, "timeout_s": 1},
                    "workers": [{"name": "rec", "url": upstream.url}]}, tmp)
    try:
        h.start()
        wait_until(lambda: chat(h.port, None).status == 200)
        yield h
    finally:
        h.stop()
        upstream.stop()


def post(head: bytes = b"", body: bytes = CHAT, target: bytes = b"/v1/chat/completions"
         ) -> bytes:
    return (b"POST " + target + b" HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n" + head
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def assert_alive(h: HubProcess) -> None:
    assert h.proc.alive()
    assert request(h.port, "GET", "/healthz").status == 200
    assert chat(h.port, None).status == 200


def assert_4xx_or_closed(reply: Reply | None) -> None:
    """A 4xx (400 or 431), or the connection closed without an answer: never a 5xx."""
    if reply is not None:
        assert 400 <= reply.status < 500, (reply.status, reply.body[:200])


HUGE = 100_000
OVERSIZED: dict[str, bytes] = {
    "100 KB header line": post(b"X-Big: " + b"a" * HUGE + b"\r\n"),
    "100 KB Cookie": post(b"Cookie: " + b"c=" + b"a" * HUGE + b"\r\n"),
    "100 KB Authorization": post(b"Authorization: Bearer " + b"a" * HUGE + b"\r\n"),
    "100 KB header name": post(b"X-" + b"n" * HUGE + b": v\r\n"),
    "100 KB request target": post(target=b"/v1/chat/completions?" + b"q" * HUGE),
    "1,000 headers": post(b"".join(b"X-H%d: v\r\n" % i for i in range(1000))),
    "129 headers": post(b"".join(b"X-H%d: v\r\n" % i for i in range(129))),
    "100 KB of obs-fold continuation": post(b"X-Fold: a\r\n" + b" b\r\n" * (HUGE // 4)),
}


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_oversized_request_head_is_4xx(hub: HubProcess, name: str) -> None:
    start = time.monotonic()
    assert_4xx_or_closed(raw(hub.port, OVERSIZED[name]))
    assert time.monotonic() - start < 3
    assert_alive(hub)


def test_large_but_legal_head_is_served(hub: HubProcess) -> None:
    """Just inside the limits (100 headers of 8 KB: an 800 KB head) is served normally."""
    head = b"".join(b"X-H%d: " % i + b"v" * 8000 + b"\r\n" for i in range(100))
    reply = raw(hub.port, post(head))
    assert reply is not None and reply.status == 200, reply
    assert_alive(hub)


def test_garbage_after_a_valid_request_on_one_connection(hub: HubProcess) -> None:
    valid = post(body=CHAT).replace(b"Connection: close\r\n", b"")
    garbage = b"\x00\xffGARBAGE\r\n\r\n"
    with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
        sock.sendall(valid)
        first = read_response(sock)
        assert first is not None and first.status == 200
        sock.sendall(garbage)
        assert_4xx_or_closed(read_response(sock))
    # both in one packet: aiohttp rejects the whole read, the valid request included
    assert_4xx_or_closed(raw(hub.port, valid + garbage))
    assert_alive(hub)


def _served_while(h: HubProcess, seconds: float) -> list[float]:
    """Latencies of well-formed requests sent back to back for ``seconds``."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reply = chat(h.port, None, timeout=5)
        assert reply.status == 200, reply.body
        out.append(reply.seconds)
    return out


def test_slowloris_heads_do_not_starve_other_clients(hub: HubProcess) -> None:
    """40 connections sending a request head one byte every 0.25 s: others are served at
    once throughout; slow heads that do finish are answered, never with a 5xx."""
    head = post(b"X-Slow: " + b"s" * 20 + b"\r\n").replace(b"Connection: close\r\n", b"")
    socks = [socket.create_connection(("127.0.0.1", hub.port), timeout=5) for _ in range(40)]
    stop = threading.Event()
    sent = [0]

    def trickle() -> None:
        while not stop.is_set() and sent[0] < len(head):
            for s in socks:
                with contextlib.suppress(OSError):  # closed by the hub's head timeout
                    s.sendall(head[sent[0]:sent[0] + 1])
            sent[0] += 1
            stop.wait(0.25)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        latencies = _served_while(hub, 3.0)
    finally:
        stop.set()
        t.join()
    assert max(latencies) < 1.0, max(latencies)
    for s in socks[:5]:  # finish five heads at full speed: a normal answer, or closed
        try:
            s.sendall(head[sent[0]:])
            s.settimeout(5)
            reply = read_response(s)
        except OSError:
            continue  # closed by the hub's head timeout meanwhile
        if reply is not None and reply.status != 200:
            assert_4xx_or_closed(reply)
    for s in socks:
        s.close()
    assert_alive(hub)


def test_slow_bodies_do_not_starve_other_clients(hub: HubProcess) -> None:
    """10 requests whose body arrives a byte every 0.25 s: others are served at once."""
    body = CHAT + b" " * 200
    socks = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        s.sendall(post(body=body).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
        socks.append(s)
    stop = threading.Event()

    def trickle() -> None:
        i = 0
        while not stop.is_set():
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(body[i:i + 1])
            i += 1
            stop.wait(0.25)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        latencies = _served_while(hub, 2.5)
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
    assert max(latencies) < 1.0, max(latencies)
    assert_alive(hub)


def test_a_thousand_idle_connections_do_not_block_others(hub: HubProcess) -> None:
    socks = [socket.create_connection(("127.0.0.1", hub.port), timeout=5) for _ in range(1000)]
    try:
        latencies = _served_while(hub, 1.0)
        assert max(latencies) < 1.0, max(latencies)
    finally:
        for s in socks:
            s.close()
    assert_alive(hub)
