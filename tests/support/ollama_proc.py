"""tests/support/ollama_fake.py as a real process, controlled over HTTP."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.procs import ROOT, Proc, free_port, wait_http


class OllamaFake:
    def __init__(self, workdir: Path, models: Iterable[str] = ("llama3.2:3b",),
                 loaded: Iterable[str] = (), **opts: float) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "tests.support.ollama_fake", "--port", str(self.port),
                "--models", ",".join(models), "--loaded", ",".join(loaded)]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = Proc(argv, workdir / f"ollama-{self.port}.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OllamaFake:
        self.proc.start()
        wait_http(f"{self.url}/api/version", self.proc.proc, timeout=30)
        return self

    def control(self, **state: Any) -> dict[str, Any]:
        """POST /_control, e.g. ``control(pull="mistral:7b")`` or ``control(healthy=False)``."""
        req = urllib.request.Request(f"{self.url}/_control", data=json.dumps(state).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            out: dict[str, Any] = json.load(resp)
            return out

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as resp:
            out: dict[str, Any] = json.load(resp)
            return out

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()
