"""Connection-level limits: slow or oversized request heads never tie up or crash the hub."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.support.hubproc import HubProcess
from tests.support.procs import http_status


def test_slow_request_head_is_closed(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub({"workers": []})
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=30)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n")
    start = time.monotonic()
    closed_after = None
    while time.monotonic() - start < 20:
        try:
            sock.sendall(b"X-Slow: a\r\n")  # a header line every half second, never finishing
        except OSError:
            closed_after = time.monotonic() - start
            break
        sock.settimeout(0.5)
        try:
            if sock.recv(1024) == b"":
                closed_after = time.monotonic() - start
                break
        except TimeoutError:
            pass
    sock.close()
    assert closed_after is not None, "a never-finished request head kept its connection"
    assert closed_after < 15  # header timeout 10 s, checked every second
    assert http_status(f"{hub.url}/healthz") == 200


def test_oversized_head_is_a_4xx(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub({"workers": []})
    for head in (b"X-Big: " + b"a" * 100_000 + b"\r\n",
                 b"".join(b"X-H%d: v\r\n" % i for i in range(1000))):
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n" + head + b"\r\n")
                reply = sock.recv(1024)
            except ConnectionResetError:
                reply = b""
        assert reply == b"" or reply.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), reply[:80]
    assert http_status(f"{hub.url}/healthz") == 200
