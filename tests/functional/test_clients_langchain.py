"""LangChain's ChatOpenAI with ``base_url`` at the hub (JWT auth on), real llama.cpp workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.conftest import workers_config
from tests.support.clients import AuthHub
from tests.support.llama import LlamaWorker


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory,
        llama_pair: tuple[LlamaWorker, LlamaWorker]) -> Iterator[AuthHub]:
    hub = AuthHub(workers_config(*llama_pair), tmp_path_factory.mktemp("langchain")).start()
    yield hub
    hub.stop()


def chat(hub: AuthHub) -> ChatOpenAI:
    return ChatOpenAI(model="tiny", base_url=f"{hub.url}/v1",
                      api_key=SecretStr(hub.token("infer")), max_completion_tokens=8,
                      max_retries=0, timeout=60)


def test_invoke(hub: AuthHub) -> None:
    msg = chat(hub).invoke("Say something.")
    assert isinstance(msg.content, str) and msg.content
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] == 8


def test_stream(hub: AuthHub) -> None:
    chunks = list(chat(hub).stream("Say something."))
    assert len(chunks) >= 3
    assert "".join(str(c.content) for c in chunks)
