"""``spokehub-agent --once --print`` next to a real llama-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.llama import LlamaWorker
from tests.support.procs import ROOT


def test_once_print_next_to_real_llama_server(make_llama: Callable[..., LlamaWorker],
                                              tmp_path: Path) -> None:
    worker = make_llama("tiny", slots=4)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent_id: gpu-box-1\nadvertise_host: 10.0.0.5\ngpu: auto\n"
                   f"workers:\n  - url: {worker.url}\n    kind: llamacpp\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPOKEHUB_AGENT_TOKEN": "never-printed"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(cfg), "--once",
                           "--print"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "never-printed" not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"agent_id", "version", "interval_s", "host", "workers"}
    assert (doc["agent_id"], doc["version"], doc["interval_s"]) == ("gpu-box-1", "0.1.0", 5)
    assert set(doc["host"]) == {"hostname", "gpus", "ram_total_mb", "ram_available_mb",
                                "cpu_count", "load1"}
    assert doc["workers"] == [{
        "name": f"gpu-box-1-llamacpp-{worker.port}", "url": f"http://10.0.0.5:{worker.port}",
        "kind": "llamacpp", "models": ["tiny"], "loaded_models": ["tiny"], "slots_total": 4,
        "slots_busy": 0, "healthy": True, "vram_free_mb": doc["workers"][0]["vram_free_mb"]}]
