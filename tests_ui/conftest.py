from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import workers_config
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker, tiny_model
from tests_ui.webui import WEBUI_BIN

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="session")
def hub(workdir: Path) -> Iterator[HubProcess]:
    """Two real llama.cpp workers serving ``tiny`` behind a real hub, auth off."""
    if not WEBUI_BIN.exists():
        pytest.fail(f"open-webui is not installed at {WEBUI_BIN} (run scripts/test_ui.sh)")
    tiny_model(0)
    tiny_model(1)
    workers = [LlamaWorker("tiny", workdir, seed=0).start(wait=False),
               LlamaWorker("tiny", workdir, seed=1).start(wait=False)]
    hub = None
    try:
        for w in workers:
            w.start_wait()
        hub = HubProcess(workers_config(*workers, auth={"enabled": False}), workdir).start()
        yield hub
    finally:
        if hub is not None:
            hub.stop()
        for w in workers:
            w.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Debian's chromium is not installed at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
