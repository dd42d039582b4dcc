"""A client that goes away mid-stream frees the llama.cpp slot at once."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.conftest import workers_config
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker


def _busy_slots(worker: LlamaWorker) -> int:
    with urllib.request.urlopen(f"{worker.url}/slots", timeout=5) as resp:
        slots: list[dict[str, Any]] = json.load(resp)
    return sum(1 for s in slots if s.get("is_processing"))


def _open_stream(hub: HubProcess, max_tokens: int) -> socket.socket:
    body = json.dumps({"model": "tiny", "stream": True, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "go on forever"}]}).encode()
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while data.count(b"data: ") < 3:  # the stream has started flowing
        chunk = sock.recv(65536)
        assert chunk, "hub closed the stream early"
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    return sock


def test_client_disconnect_frees_worker_slot(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess]) -> None:
    # One slot with a large context: an abandoned generation would keep it busy for many seconds.
    worker = make_llama(seed=0, slots=1, ctx=32768)
    hub = make_hub(workers_config(worker))
    sock = _open_stream(hub, max_tokens=30000)
    assert _busy_slots(worker) == 1
    sock.close()
    start = time.monotonic()
    while _busy_slots(worker) and time.monotonic() - start < 10:
        time.sleep(0.02)
    freed_after = time.monotonic() - start
    assert _busy_slots(worker) == 0, "the upstream generation kept running after disconnect"
    assert freed_after < 5.0  # generating 30k tokens would take far longer
    # and the hub's own in-flight count went back to zero
    assert hub.workers()["w0"]["in_flight"] == 0
