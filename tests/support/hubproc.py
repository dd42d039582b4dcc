"""The hub as a real process (``python -m hub serve``), configured from a dict."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import ROOT, Proc, free_port, wait_http


class HubProcess:
    def __init__(self, config: dict[str, Any], workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.config = {"listen": {"host": "127.0.0.1", "port": self.port}, **config}
        self.workdir = workdir
        self.config_path = workdir / f"hub-{self.port}.yaml"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = Proc([sys.executable, "-m", "hub", "serve", "--config",
                          str(self.config_path)], workdir / f"hub-{self.port}.log", self.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def write_config(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = {"listen": {"host": "127.0.0.1", "port": self.port}, **config}
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self) -> HubProcess:
        self.write_config()
        self.proc.start()
        wait_http(f"{self.url}/healthz", self.proc.proc, timeout=30)
        return self

    def stop(self) -> int | None:
        return self.proc.stop()

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            return json.load(resp)

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w["name"]: w for w in self.get_json("/admin/workers")["workers"]}


class FaultWorker:
    """tests/support/fault_worker.py as a real process."""

    def __init__(self, workdir: Path, model: str = "fault-model", mode: str = "ok",
                 **opts: float) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "tests.support.fault_worker", "--port", str(self.port),
                "--model", model, "--mode", mode]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = Proc(argv, workdir / f"fault-{self.port}.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultWorker:
        self.proc.start()
        wait_http(f"{self.url}/v1/models", self.proc.proc, timeout=30)
        return self

    def control(self, **state: Any) -> None:
        req = urllib.request.Request(f"{self.url}/_control", data=json.dumps(state).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as resp:
            out: dict[str, Any] = json.load(resp)
            return out

    def stop(self) -> None:
        self.proc.stop()
