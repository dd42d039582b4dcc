"""Broken streams end in their own API's shape, read by the real clients; failover before
the first byte, cancel on disconnect, metrics and logs work on the new routes as on chat.

Workers: ``tests/support/fault_worker.py`` processes (they stream Responses and Messages
events too) and a real llama.cpp worker.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.support.closing import closing
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker

pytestmark = pytest.mark.timeout(120)
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def _hub(make_hub: Callable[..., HubProcess], *workers: Any) -> HubProcess:
    return make_hub({"health": {"interval_s": 0.5, "timeout_s": 1},
                     "timeouts": {"first_byte_s": 10, "idle_s": 10, "total_s": 60},
                     "workers": [{"name": f"w{i}", "url": w.url}
                                 for i, w in enumerate(workers)]})


def _events(raw: bytes) -> list[tuple[str, str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            out.append((fields.get("event", ""), fields.get("data", "")))
    return out


@pytest.mark.parametrize("mode", ["no_done", "cut_event", "reset_midstream", "die_midstream"])
def test_responses_stream_cut_ends_with_a_responses_error_event(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        mode: str) -> None:
    hub = _hub(make_hub, make_fault(mode=mode, chunks=3))
    client = closing(openai.OpenAI(base_url=hub.base_url, api_key="unused", max_retries=0,
                                   timeout=30))
    events = list(client.responses.create(model="fault-model", input="hi", stream=True))
    assert [e.type for e in events[:3]] == ["response.output_text.delta"] * 3
    last: Any = events[-1]
    assert last.type == "error" and last.code == "upstream_error" and last.message
    assert len(events) == 4  # every whole event, then the error: never half of one
    raw = httpx.post(f"{hub.base_url}/responses", timeout=30,
                     json={"model": "fault-model", "input": "hi", "stream": True})
    if mode != "die_midstream":
        assert _events(raw.content)[-1][0] == "error" and b"[DONE]" not in raw.content


@pytest.mark.parametrize("mode", ["no_done", "cut_event", "reset_midstream"])
def test_messages_stream_cut_ends_with_anthropics_error_event(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        mode: str) -> None:
    hub = _hub(make_hub, make_fault(mode=mode, chunks=3))
    client = closing(anthropic.Anthropic(base_url=hub.url, api_key="unused", max_retries=0,
                                         timeout=30))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        for event in client.messages.create(model="fault-model", max_tokens=8,
                                            messages=MESSAGES, stream=True):
            seen.append(event.type)
    assert seen == ["content_block_delta"] * 3
    body: Any = err.value.body
    assert body == {"type": "error", "error": {"type": "api_error", "message": body["error"][
        "message"]}} and body["error"]["message"]


def test_a_finished_stream_is_not_touched(make_fault: Callable[..., FaultWorker],
                                          make_hub: Callable[..., HubProcess]) -> None:
    hub = _hub(make_hub, make_fault(chunks=3))
    raw = httpx.post(f"{hub.base_url}/messages", timeout=30, json={
        "model": "fault-model", "max_tokens": 8, "messages": MESSAGES, "stream": True})
    events = _events(raw.content)
    assert [e for e, _ in events] == ["content_block_delta"] * 3 + ["message_stop"]
    raw = httpx.post(f"{hub.base_url}/responses", timeout=30,
                     json={"model": "fault-model", "input": "hi", "stream": True})
    assert _events(raw.content)[-1][0] == "response.completed"


def test_ollama_stream_cut_ends_with_an_error_line(make_fault: Callable[..., FaultWorker],
                                                   make_hub: Callable[..., HubProcess]) -> None:
    hub = _hub(make_hub, make_fault(mode="no_done", chunks=3))
    client = closing(ollama.Client(host=hub.url, timeout=30))
    parts: list[ollama.ChatResponse] = []
    with pytest.raises(ollama.ResponseError) as err:
        parts.extend(client.chat(model="fault-model", messages=MESSAGES, stream=True))
    assert len(parts) == 3 and not any(p.done for p in parts)
    assert err.value.error.startswith("Worker w0 failed")  # the hub's own error line
    raw = httpx.post(f"{hub.url}/api/chat", timeout=30,
                     json={"model": "fault-model", "messages": MESSAGES})
    assert raw.headers["content-type"].startswith("application/x-ndjson")
    lines = raw.content.splitlines()
    assert len(lines) == 4 and lines[-1].startswith(b'{"error":')


def test_new_routes_fail_over_before_the_first_byte(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        make_llama: Callable[..., LlamaWorker]) -> None:
    """A worker answering 500 is charged and the next one answers, on every API."""
    broken = make_fault(model="tiny", mode="error500")
    hub = _hub(make_hub, broken, make_llama())
    msg = closing(anthropic.Anthropic(base_url=hub.url, api_key="x", max_retries=0)).messages \
        .with_raw_response.create(model="tiny", max_tokens=2, messages=MESSAGES)
    resp = closing(openai.OpenAI(base_url=hub.base_url, api_key="x", max_retries=0)).responses \
        .with_raw_response.create(model="tiny", input="hi", max_output_tokens=2)
    chat = httpx.post(f"{hub.url}/api/chat", timeout=30, json={
        "model": "tiny", "messages": MESSAGES, "stream": False, "options": {"num_predict": 2}})
    for raw in (msg, resp, chat):
        assert raw.status_code == 200 and raw.headers["x-spokehub-worker"] == "w1"
    assert broken.stats()["requests"] >= 1
    metrics = httpx.get(f"{hub.url}/metrics", timeout=10).text.splitlines()
    for route in ("/messages", "/responses", "/api/chat"):
        assert any(line.startswith("spokehub_requests_total{") and f'route="{route}"' in line
                   and 'worker="w1"' in line and 'status="200"' in line
                   for line in metrics), route
    log = hub.proc.log_path.read_text()
    assert '"route":"/messages"' in log and '"route":"/api/chat"' in log


def test_client_disconnect_closes_the_upstream_stream(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess]) -> None:
    worker = make_fault(chunks=200, delay_s=0.05)
    hub = _hub(make_hub, worker)
    for path, body in (("/v1/messages", {"model": "fault-model", "max_tokens": 8,
                                         "messages": MESSAGES, "stream": True}),
                       ("/api/generate", {"model": "fault-model", "prompt": "hi"})):
        payload = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         f"\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
            got = b""
            while got.count(b"\n") < 12:  # headers and a few events or lines
                got += sock.recv(4096)
            assert worker.stats()["active"] == 1
        deadline = time.monotonic() + 10
        while worker.stats()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.stats()["active"] == 0, path
