"""Anthropic's SDK against a hub with JWT auth on and real llama.cpp workers: Messages
(plain and streamed), count_tokens, and the hub's own errors in Anthropic's shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import workers_config
from tests.support.clients import AuthHub
from tests.support.closing import closing
from tests.support.llama import LlamaWorker
from tests.support.procs import free_port

MESSAGES: list[Any] = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory,
        llama_pair: tuple[LlamaWorker, LlamaWorker]) -> Iterator[AuthHub]:
    config = workers_config(
        *llama_pair,
        limits={"max_body_bytes": 64 * 1024},
        admission={"tenants": {"slow": {"requests_per_s": 0.01, "burst": 1, "max_queue": 0}}})
    # a model only a dead worker serves: known to the hub, no healthy worker for it
    config["workers"].append({"name": "ghost", "url": f"http://127.0.0.1:{free_port()}",
                              "models": ["ghost"]})
    hub = AuthHub(config, tmp_path_factory.mktemp("anthropic")).start()
    yield hub
    hub.stop()


def client(hub: AuthHub, token: str | None = None) -> anthropic.Anthropic:
    return closing(anthropic.Anthropic(base_url=hub.url, api_key=token or hub.token("infer"),
                               max_retries=0, timeout=60))


def test_messages_create(hub: AuthHub) -> None:
    msg = client(hub).messages.create(model="tiny", max_tokens=8, messages=MESSAGES)
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 8


def test_messages_stream(hub: AuthHub) -> None:
    events = list(client(hub).messages.create(model="tiny", max_tokens=8, messages=MESSAGES,
                                              stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") >= 2, kinds


def test_messages_stream_helper(hub: AuthHub) -> None:
    with client(hub).messages.stream(model="tiny", max_tokens=8, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text


def test_count_tokens(hub: AuthHub) -> None:
    count = client(hub).messages.count_tokens(model="tiny", messages=MESSAGES,
                                              system="Be brief.")
    assert count.input_tokens > 5


def test_x_api_key_header_is_accepted(hub: AuthHub) -> None:
    """Anthropic's API and many of its clients send the key as x-api-key."""
    resp = httpx.post(f"{hub.url}/v1/messages/count_tokens", timeout=30,
                      headers={"x-api-key": hub.token("infer"), "anthropic-version": "2023-06-01"},
                      json={"model": "tiny", "messages": MESSAGES})
    assert resp.status_code == 200 and resp.json()["input_tokens"] > 0


def _anthropic_error(err: anthropic.APIStatusError, kind: str) -> None:
    body: Any = err.body
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert body["error"]["type"] == kind and body["error"]["message"], body


def test_errors_are_anthropic_shaped(hub: AuthHub) -> None:
    with pytest.raises(anthropic.AuthenticationError) as e401:
        client(hub, "not-a-token").messages.create(model="tiny", max_tokens=1, messages=MESSAGES)
    _anthropic_error(e401.value, "authentication_error")
    assert e401.value.response.headers["www-authenticate"].startswith("Bearer")

    limited = client(hub, hub.token("infer", models=["other"]))
    with pytest.raises(anthropic.PermissionDeniedError) as e403:
        limited.messages.create(model="tiny", max_tokens=1, messages=MESSAGES)
    _anthropic_error(e403.value, "permission_error")

    with pytest.raises(anthropic.NotFoundError) as e404:
        client(hub).messages.create(model="nope", max_tokens=1, messages=MESSAGES)
    _anthropic_error(e404.value, "not_found_error")

    with pytest.raises(anthropic.RequestTooLargeError) as e413:
        client(hub).messages.create(model="tiny", max_tokens=1,
                                    messages=[{"role": "user", "content": "x" * 100_000}])
    _anthropic_error(e413.value, "request_too_large")

    slow = client(hub, hub.token("infer", tenant="slow"))
    slow.messages.count_tokens(model="tiny", messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as e429:
        slow.messages.count_tokens(model="tiny", messages=MESSAGES)
    _anthropic_error(e429.value, "rate_limit_error")
    assert int(e429.value.response.headers["retry-after"]) >= 1

    with pytest.raises(anthropic.InternalServerError) as e503:
        client(hub).messages.create(model="ghost", max_tokens=1, messages=MESSAGES)
    assert e503.value.status_code == 503
    _anthropic_error(e503.value, "overloaded_error")

    with pytest.raises(anthropic.BadRequestError) as e400:
        client(hub).messages.create(model="tiny", max_tokens=1, messages=[])
    _anthropic_error(e400.value, "invalid_request_error")


def test_openai_routes_keep_openai_errors(hub: AuthHub) -> None:
    resp = httpx.post(f"{hub.url}/v1/chat/completions",
                      json={"model": "nope", "messages": MESSAGES}, timeout=30,
                      headers={"Authorization": f"Bearer {hub.token('infer')}"})
    assert resp.status_code == 404 and set(resp.json()) == {"error"}
