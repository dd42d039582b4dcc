"""Every error is OpenAI-shaped JSON with the right status, and never takes the hub down."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.closing import closing
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
CHAT: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}


def post(hub: HubProcess, path: str, body: bytes | str | dict[str, Any],
         headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else (
        body.encode() if isinstance(body, str) else body)
    req = urllib.request.Request(f"{hub.url}{path}", data=data if method == "POST" else None,
                                 method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_openai_error(doc: Any, code: str | None = None) -> None:
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    assert "code" in err
    if code:
        assert err["code"] == code, err


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, llama_pair: tuple[LlamaWorker, LlamaWorker],
        ) -> Iterator[tuple[HubProcess, dict[str, FaultWorker]]]:
    tmp = tmp_path_factory.mktemp("errors")
    faults = {"hang": FaultWorker(tmp, "hang-model", "hang").start(),
              "err": FaultWorker(tmp, "err-model", "error500").start()}
    dead_port = faults["err"].port + 1  # nothing listens there (checked by the 503 test)
    config = {
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "timeouts": {"first_byte_s": 1.0},
        "limits": {"max_body_bytes": 4096},
        "workers": [
            {"name": "good", "url": llama_pair[0].url},
            {"name": "hang", "url": faults["hang"].url},
            {"name": "err", "url": faults["err"].url},
            {"name": "down", "url": f"http://127.0.0.1:{dead_port}", "models": ["down-model"]},
        ],
    }
    hub = HubProcess(config, tmp).start()
    try:
        yield hub, faults
    finally:
        hub.stop()
        for f in faults.values():
            f.stop()


def test_malformed_json_is_400(hub: tuple[HubProcess, Any]) -> None:
    status, doc = post(hub[0], "/v1/chat/completions", "{not json")
    assert status == 400
    assert_openai_error(doc, "invalid_json")
    status, doc = post(hub[0], "/v1/chat/completions", b"\xff\xfe\x00")
    assert status == 400
    status, doc = post(hub[0], "/v1/chat/completions", "[1, 2]")
    assert status == 400
    assert_openai_error(doc, "invalid_json")


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
    ("/v1/chat/completions", {"model": "tiny"}, "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, "messages"),
    ("/v1/chat/completions", {"model": 5, "messages": [{"role": "user", "content": "x"}]},
     "model"),
    ("/v1/completions", {"model": "tiny"}, "prompt"),
    ("/v1/embeddings", {"model": "tiny"}, "input"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                              "stream": "yes"}, "stream"),
])
def test_missing_or_bad_fields_are_400(hub: tuple[HubProcess, Any], path: str,
                                       body: dict[str, Any], param: str) -> None:
    status, doc = post(hub[0], path, body)
    assert status == 400
    assert_openai_error(doc)
    assert doc["error"]["param"] == param


def test_body_over_cap_is_413(hub: tuple[HubProcess, Any]) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 10_000}]}
    status, doc = post(hub[0], "/v1/chat/completions", big)
    assert status == 413
    assert_openai_error(doc, "request_too_large")


def test_body_over_cap_without_content_length_is_413(hub: tuple[HubProcess, Any]) -> None:
    body = json.dumps({**CHAT, "pad": "x" * 10_000}).encode()
    with socket.create_connection(("127.0.0.1", hub[0].port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 1000):
            part = body[i:i + 1000]
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:100]
    assert b'"request_too_large"' in head


def test_answers_carry_nosniff(hub: tuple[HubProcess, Any]) -> None:
    for path in ("/healthz", "/v1/models", "/v1/nope"):
        req = urllib.request.Request(f"{hub[0].url}{path}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                headers = resp.headers
        except urllib.error.HTTPError as exc:
            headers = exc.headers
        assert headers["X-Content-Type-Options"] == "nosniff", path


def test_unknown_model_is_404(hub: tuple[HubProcess, Any]) -> None:
    status, doc = post(hub[0], "/v1/chat/completions", {**CHAT, "model": "gpt-9"})
    assert status == 404
    assert_openai_error(doc, "model_not_found")


def test_no_healthy_worker_is_503(hub: tuple[HubProcess, Any]) -> None:
    assert hub[0].workers()["down"]["healthy"] is False
    status, doc = post(hub[0], "/v1/chat/completions", {**CHAT, "model": "down-model"})
    assert status == 503
    assert_openai_error(doc, "no_healthy_worker")


def test_upstream_timeout_is_504(hub: tuple[HubProcess, Any]) -> None:
    status, doc = post(hub[0], "/v1/chat/completions", {**CHAT, "model": "hang-model"})
    assert status == 504
    assert_openai_error(doc, "upstream_timeout")


def test_upstream_failure_is_502(hub: tuple[HubProcess, Any]) -> None:
    status, doc = post(hub[0], "/v1/chat/completions", {**CHAT, "model": "err-model"})
    assert status == 502
    assert_openai_error(doc, "upstream_error")


def test_unknown_route_and_method_are_json(hub: tuple[HubProcess, Any]) -> None:
    status, doc = post(hub[0], "/v1/nope", CHAT)
    assert status == 404
    assert_openai_error(doc)
    status, doc = post(hub[0], "/v1/chat/completions", b"", method="GET")
    assert status == 405
    assert_openai_error(doc)


def test_sdk_sees_typed_errors_and_hub_survives(hub: tuple[HubProcess, Any]) -> None:
    c = closing(openai.OpenAI(base_url=hub[0].base_url, api_key="x", max_retries=0, timeout=30))
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="err-model", messages=MESSAGES)
    assert err.value.status_code == 502
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=[])
    # after all of the above, good requests still work
    ok = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert ok.choices
    assert hub[0].proc.alive()
    assert "Traceback" not in hub[0].proc.log()
