"""Rerank, tokenize, detokenize and audio through the hub answer what the worker answers
directly, byte for byte (none of these answers has timing fields); rerank goes only to
the worker whose ``routes:`` take it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import workers_config
from tests.support.clients import AuthHub
from tests.support.llama import LlamaWorker

NOT_RERANK = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
              "/v1/messages", "/v1/messages/count_tokens", "/tokenize", "/detokenize",
              "/v1/audio/transcriptions"]
RERANK = {"model": "tiny", "query": "what is a cat?",
          "documents": ["a cat is a small animal", "the stock market fell", "cats purr"],
          "top_n": 2}


@pytest.fixture(scope="module")
def reranker(logdir: Path, llama_bin: Path) -> Iterator[LlamaWorker]:
    """This build reranks with the tiny generated model when started with --reranking
    (its scores are meaningless, but deterministic)."""
    worker = LlamaWorker("tiny", logdir, extra=["--reranking"]).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, llama_pair: tuple[LlamaWorker, LlamaWorker],
        reranker: LlamaWorker) -> Iterator[AuthHub]:
    config = workers_config(*llama_pair, reranker)
    for worker in config["workers"][:2]:
        worker["routes"] = NOT_RERANK
    config["workers"][2]["routes"] = ["/v1/rerank"]
    hub = AuthHub(config, tmp_path_factory.mktemp("passthrough")).start()
    yield hub
    hub.stop()


def _post(url: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url, headers=headers, timeout=60, **kw)


def _without_timings(raw: bytes) -> Any:
    doc = json.loads(raw)
    if isinstance(doc, dict):
        doc.pop("timings", None)
    return doc


def _same(via_hub: httpx.Response, direct: httpx.Response) -> None:
    assert via_hub.status_code == direct.status_code
    assert _without_timings(via_hub.content) == _without_timings(direct.content)
    assert via_hub.content == direct.content  # no timing fields: the very same bytes


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_goes_to_the_reranker_and_answers_as_it_does(
        hub: AuthHub, reranker: LlamaWorker, path: str) -> None:
    direct = _post(f"{reranker.url}/v1/rerank", json=RERANK)
    assert direct.status_code == 200 and len(direct.json()["results"]) == 2
    token = hub.token("infer")
    for _ in range(3):  # round robin would reach the other workers if they were candidates
        via_hub = _post(f"{hub.url}{path}", token, json=RERANK)
        assert via_hub.headers["x-spokehub-worker"] == "w2"
        _same(via_hub, direct)


def test_tokenize_and_detokenize_match_the_worker(
        hub: AuthHub, llama_pair: tuple[LlamaWorker, LlamaWorker]) -> None:
    token = hub.token("infer")
    urls = {"w0": llama_pair[0].url, "w1": llama_pair[1].url}
    for body in ({"content": "Hello world, naïve 世界"},  # no model: the fleet serves one
                 {"model": "tiny", "content": "Hello", "with_pieces": True}):
        via_hub = _post(f"{hub.url}/tokenize", token, json=body)
        assert via_hub.headers["x-spokehub-worker"] in urls  # never the reranker
        _same(via_hub, _post(f"{urls[via_hub.headers['x-spokehub-worker']]}/tokenize",
                             json=body))
    tokens = _post(f"{hub.url}/tokenize", token, json={"content": "Hello world"}).json()["tokens"]
    via_hub = _post(f"{hub.url}/detokenize", token, json={"tokens": tokens})
    assert via_hub.json()["content"].strip() == "Hello world"
    _same(via_hub, _post(f"{urls[via_hub.headers['x-spokehub-worker']]}/detokenize",
                         json={"tokens": tokens}))


def test_tokenize_needs_the_infer_scope(hub: AuthHub) -> None:
    assert _post(f"{hub.url}/tokenize", json={"content": "x"}).status_code == 401
    denied = _post(f"{hub.url}/tokenize", hub.token("agent"), json={"content": "x"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"


def test_audio_upload_reaches_the_worker_as_multipart(
        hub: AuthHub, llama_pair: tuple[LlamaWorker, LlamaWorker]) -> None:
    """This build and model cannot transcribe: the worker's own 501 comes back as is,
    which shows the form (model field and file) reached it intact."""
    files = {"file": ("clip.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64), "audio/wav")}
    data = {"model": "tiny", "response_format": "json"}
    via_hub = _post(f"{hub.url}/v1/audio/transcriptions", hub.token("infer"), data=data,
                    files=files)
    assert via_hub.status_code == 501
    assert via_hub.json()["error"]["type"] == "not_supported_error"
    worker = dict(zip(("w0", "w1"), llama_pair, strict=True))[via_hub.headers["x-spokehub-worker"]]
    _same(via_hub, _post(f"{worker.url}/v1/audio/transcriptions", data=data, files=files))
    missing = _post(f"{hub.url}/v1/audio/transcriptions", hub.token("infer"),
                    data={"language": "en"}, files=files)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
