"""Malformed inputs the fuzzer (tests/security/test_fuzz.py) turned into hub 5xx, one by one.

Each is a request a client can send (an agent token for the heartbeat) that must get a
4xx -- or a 200 where the hub can sensibly ignore the odd part -- never a 500. The hub
runs without auth here so every body reaches the code under test.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.support import Reply, assert_openai_error, raw, request, wait_until
from tests.security.upstream import RecordingUpstream
from tests.support.hubproc import HubProcess

MODEL, NATIVE = "rec-model", "native-model"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    tmp = tmp_path_factory.mktemp("regressions")
    plain = RecordingUpstream(tmp, (MODEL,)).start()
    native = RecordingUpstream(tmp, (NATIVE,)).start()
    h = HubProcess({"health": {"interval_s": 0.5, "timeout_s": 1},
                    "agents": {"enabled": True},  # auth is off: heartbeats need this
                    "workers": [{"name": "plain", "url": plain.url},
                                {"name": "native", "url": native.url, "kind": "ollama",
                                 "api": "native"}]}, tmp)
    try:
        h.start()
        for model in (MODEL, NATIVE):
            wait_until(lambda m=model: _chat(h, m).status == 200)
        yield h
    finally:
        h.stop()
        plain.stop()
        native.stop()


def _chat(h: HubProcess, model: str, **fields: Any) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    return request(h.port, "POST", "/v1/chat/completions", body)


def _not_a_5xx(reply: Reply) -> None:
    """A 4xx in OpenAI's error shape, or a 200 when the odd part can just be ignored."""
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status != 200:
        assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
        assert_openai_error(reply, reply.status)


# -- the Ollama native translator ----------------------------------------------------------

NATIVE_BAD: dict[str, list[dict[str, Any]]] = {
    "tool_calls is a string": [{"role": "assistant", "content": "x", "tool_calls": "x"}],
    "tool_calls is a number": [{"role": "assistant", "content": "x", "tool_calls": 5}],
    "tool_calls is an object": [{"role": "assistant", "content": "x",
                                 "tool_calls": {"id": "a", "function": {"name": "f"}}}],
    "tool call id is a list": [{"role": "assistant", "content": "x", "tool_calls": [
        {"id": [1], "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
    "tool call id is an object": [{"role": "assistant", "content": "x", "tool_calls": [
        {"id": {"a": 1}, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
    "tool_call_id is a list": [{"role": "tool", "content": "x", "tool_call_id": [1]}],
    "image url is a number": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": 5}}]}],
    "tool arguments nested 100k deep": [{"role": "assistant", "content": "x", "tool_calls": [
        {"id": "c", "type": "function",
         "function": {"name": "f", "arguments": "[" * 100_000 + "]" * 100_000}}]}],
}


@pytest.mark.parametrize("name", list(NATIVE_BAD))
def test_native_translator_rejects_malformed_messages(hub: HubProcess, name: str) -> None:
    """Bug: NativeChat.request (hub/backends/ollama_native.py) assumes the shapes it reads
    and raises TypeError / AttributeError / RecursionError, but the proxy only turns
    ValueError into a 400: the rest is a 500. A 4xx is right; so is ignoring an id of
    the wrong type."""
    _not_a_5xx(_chat(hub, NATIVE, messages=NATIVE_BAD[name]))
    # the same body to an OpenAI-speaking worker passes through untouched
    assert _chat(hub, MODEL, messages=NATIVE_BAD[name]).status == 200


def test_native_translator_survives_nesting_the_hub_accepted(hub: HubProcess) -> None:
    """Bug: a body nested just shallow enough for the hub's own json.loads is parsed again
    by the native translator from a deeper stack, where it raises RecursionError (a 500).
    Every depth must give 200 or a 4xx."""
    bad = []
    for model in (NATIVE, MODEL):
        for depth in range(900, 1001):  # the failing window is narrow and stack-dependent
            body = ('{"model":"' + model + '","messages":[{"role":"user","content":"hi"}],'
                    '"x":' + "[" * depth + "]" * depth + "}")
            reply = request(hub.port, "POST", "/v1/chat/completions", body)
            if reply.status >= 500:
                bad.append((model, depth))
    assert not bad, f"5xx at (model, nesting depth) {bad}"


# -- agent heartbeats ----------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("slots_total", "1e400"),  # valid JSON; Python reads it as float inf
    ("slots_total", "1" + "0" * 400),  # an int past float range
    ("slots_busy", "1e400"),
    ("vram_free_mb", "1" + "0" * 400),
    ("vram_free_mb", "-1e400"),
])
def test_heartbeat_with_out_of_range_numbers(hub: HubProcess, field: str, value: str) -> None:
    """Bug: hub/agents.py ``_num`` calls float() on any int and ``int()`` on inf:
    OverflowError, a 500 (after the worker was already added to the registry)."""
    worker = ('{"name":"ovf-w","url":"http://127.0.0.1:9","kind":"llamacpp",'
              '"models":["m"],"slots_total":2,"slots_busy":0,' + f'"{field}":{value}' + "}")
    body = '{"agent_id":"ovf-agent","workers":[' + worker + "]}"
    reply = request(hub.port, "POST", "/v1/agents/heartbeat", body)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["accepted"] == [], reply.body[:300]  # refused, never clamped
    request(hub.port, "DELETE", "/v1/agents/ovf-agent")


# -- request bodies the server must refuse cleanly -----------------------------------------

@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-unknown"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/agents/heartbeat"])
def test_content_encoding_is_never_a_500(hub: HubProcess, path: str, encoding: str) -> None:
    """Was a 500 (aiohttp's ContentEncodingError escaped read_body) until request bodies
    stopped being inflated; a compressed or mislabelled body is now not JSON: a 400."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                       "agent_id": "enc-agent"}).encode()
    for data in (body, gzip.compress(body), zlib.compress(body)):
        head = (f"POST {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        reply = raw(hub.port, head + data)
        assert reply is not None and reply.status < 500, (data[:10], reply)


def test_nothing_above_was_logged_as_unhandled(hub: HubProcess) -> None:
    """Run last: the error middleware logged no exception for any request of this module."""
    lines = [ln for ln in hub.proc.log().splitlines() if "unhandled error" in ln]
    kinds = sorted({json.loads(ln).get("exc", "").strip().splitlines()[-1][:120]
                    for ln in lines})
    assert not lines, f"{len(lines)} unhandled errors: {kinds}"
