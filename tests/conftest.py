from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.closing import close_all
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker, llama_server_bin, tiny_model


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    """Closes the clients a test handed to :func:`tests.support.closing.closing`."""
    yield
    close_all()


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def llama_bin() -> Path:
    return llama_server_bin()


@pytest.fixture(scope="session")
def llama_pair(llama_bin: Path, logdir: Path) -> Iterator[tuple[LlamaWorker, LlamaWorker]]:
    """Two real llama.cpp workers serving the same model name, shared by read-only tests."""
    tiny_model(0)
    tiny_model(1)
    a = LlamaWorker("tiny", logdir, seed=0, embeddings=True).start(wait=False)
    b = LlamaWorker("tiny", logdir, seed=1, embeddings=True).start(wait=False)
    try:
        for w in (a, b):
            w.start_wait()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def make_llama(llama_bin: Path, logdir: Path) -> Iterator[Callable[..., LlamaWorker]]:
    """Workers a test may kill or restart; stopped at the end of the test."""
    started: list[LlamaWorker] = []

    def make(alias: str = "tiny", **kw: Any) -> LlamaWorker:
        w = LlamaWorker(alias, logdir, **kw)
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop()


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., HubProcess]]:
    started: list[HubProcess] = []

    def make(config: dict[str, Any], env: dict[str, str] | None = None,
             start: bool = True) -> HubProcess:
        hub = HubProcess(config, tmp_path, env)
        started.append(hub)
        return hub.start() if start else hub

    yield make
    for hub in started:
        hub.stop()


@pytest.fixture
def make_fault(tmp_path: Path) -> Iterator[Callable[..., FaultWorker]]:
    started: list[FaultWorker] = []

    def make(model: str = "fault-model", mode: str = "ok", **opts: float) -> FaultWorker:
        w = FaultWorker(tmp_path, model, mode, **opts)
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop()


def workers_config(*workers: Any, **extra: Any) -> dict[str, Any]:
    """Hub config for workers (LlamaWorker/FaultWorker), fast probes for tests."""
    cfg: dict[str, Any] = {
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "workers": [{"name": f"w{i}", "url": w.url, "kind": "llamacpp"}
                    for i, w in enumerate(workers)],
    }
    cfg.update(extra)
    return cfg
