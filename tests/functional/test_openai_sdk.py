"""The official openai SDK, sync and async, against a hub with two real llama.cpp workers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.conftest import workers_config
from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker

MESSAGES: list[Any] = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def hub(make_hub: Callable[..., HubProcess],
        llama_pair: tuple[LlamaWorker, LlamaWorker]) -> Iterator[HubProcess]:
    yield make_hub(workers_config(*llama_pair))


def client(hub: HubProcess) -> openai.OpenAI:
    return closing(openai.OpenAI(base_url=hub.base_url, api_key="unused", max_retries=0,
                                 timeout=60))


def test_chat_non_stream(hub: HubProcess) -> None:
    resp = client(hub).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert isinstance(resp.choices[0].message.content, str)
    assert resp.usage is not None and resp.usage.completion_tokens > 0


def test_chat_stream_arrives_in_chunks(hub: HubProcess) -> None:
    stream = client(hub).chat.completions.create(model="tiny", messages=MESSAGES,
                                                 max_tokens=16, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 4, "a streamed answer must come as several chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_completions_and_stop_and_n_pass_through(hub: HubProcess) -> None:
    resp = client(hub).completions.create(model="tiny", prompt="Once upon", max_tokens=8,
                                          temperature=0)
    assert resp.object == "text_completion"
    assert resp.choices[0].text is not None


async def test_async_client_stream_and_non_stream(hub: HubProcess) -> None:
    aclient = openai.AsyncOpenAI(base_url=hub.base_url, api_key="unused", max_retries=0)
    try:
        resp = await aclient.chat.completions.create(model="tiny", messages=MESSAGES,
                                                     max_tokens=4)
        assert resp.choices[0].message.content is not None
        stream = await aclient.chat.completions.create(model="tiny", messages=MESSAGES,
                                                       max_tokens=8, stream=True)
        n = 0
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            n += 1
        assert n >= 2
    finally:
        await aclient.close()


def test_embeddings(hub: HubProcess) -> None:
    resp = client(hub).embeddings.create(model="tiny", input=["first text", "second text"])
    assert len(resp.data) == 2
    assert len(resp.data[0].embedding) == 64  # the tiny model's width
    assert resp.data[0].embedding != resp.data[1].embedding


def test_models_list(hub: HubProcess) -> None:
    models = client(hub).models.list()
    ids = [m.id for m in models.data]
    assert ids == ["tiny"]
    assert models.data[0].owned_by == "spokehub"


def test_unknown_model_is_404(hub: HubProcess) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(hub).chat.completions.create(model="nope", messages=MESSAGES)
    assert err.value.code == "model_not_found"


def test_round_robin_alternates(hub: HubProcess) -> None:
    c = client(hub)
    served = []
    for _ in range(8):
        raw = c.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES,
                                                          max_tokens=1)
        served.append(raw.headers["x-spokehub-worker"])
    assert set(served) == {"w0", "w1"}
    assert all(a != b for a, b in itertools.pairwise(served)), served
