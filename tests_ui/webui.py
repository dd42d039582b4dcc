"""Open WebUI as a real process, configured for offline, single-user use.

Open WebUI is heavy (torch, transformers, chromadb...), so it lives in its own
virtualenv (``.venv-ui``, made by ``scripts/test_ui.sh``); this module only starts
its ``open-webui`` executable. Every setting comes from the environment and a fresh
``DATA_DIR``, so nothing from an earlier run (Open WebUI keeps its settings in its
database once it has started) leaks into the next one.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.procs import ROOT, Proc, free_port, wait_http

WEBUI_BIN = Path(os.environ.get("SPOKEHUB_OPEN_WEBUI", ROOT / ".venv-ui" / "bin" / "open-webui"))

# Nothing reaches the internet: no model downloads (embeddings, reranker, whisper),
# no update check, no telemetry. No login (WEBUI_AUTH=False: one admin user).
OFFLINE_ENV = {
    "WEBUI_AUTH": "False",
    "WEBUI_SECRET_KEY": "spokehub-ui-test",
    "OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAG_EMBEDDING_ENGINE": "openai",
    "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
    "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
    "WHISPER_MODEL_AUTO_UPDATE": "false",
    "ENABLE_VERSION_UPDATE_CHECK": "false",
    "ENABLE_PERSISTENT_CONFIG": "false",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "ANONYMIZED_TELEMETRY": "false",
    # Background tasks that ask the model for a title, tags or follow-up questions:
    # off, so the only chat request the hub sees is the one the test sends.
    "ENABLE_TITLE_GENERATION": "false",
    "ENABLE_TAGS_GENERATION": "false",
    "ENABLE_FOLLOW_UP_GENERATION": "false",
    "ENABLE_AUTOCOMPLETE_GENERATION": "false",
    "ENABLE_SEARCH_QUERY_GENERATION": "false",
    "ENABLE_RETRIEVAL_QUERY_GENERATION": "false",
}


class OpenWebUI:
    def __init__(self, workdir: Path, name: str, connections: dict[str, str]) -> None:
        self.port = free_port()
        self.workdir = workdir / f"open-webui-{name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **OFFLINE_ENV, **connections,
               "DATA_DIR": str(self.workdir / "data"), "PORT": str(self.port)}
        env.pop("PYTHONPATH", None)
        self.proc = Proc([str(WEBUI_BIN), "serve", "--host", "127.0.0.1",
                          "--port", str(self.port)],
                         self.workdir / "open-webui.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> OpenWebUI:
        # cwd: open-webui writes files next to where it runs; keep them in workdir.
        cwd = Path.cwd()
        os.chdir(self.workdir)
        try:
            self.proc.start()
        finally:
            os.chdir(cwd)
        wait_http(f"{self.url}/health", self.proc.proc, timeout=timeout)
        return self

    def stop(self) -> None:
        self.proc.stop(timeout=15)

    def log(self) -> str:
        return self.proc.log()
