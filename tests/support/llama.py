"""Real llama.cpp workers: the binary built by scripts/llamacpp.sh, tiny generated models."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import ROOT, Proc, free_port, wait_http

CACHE = Path(os.environ.get("SPOKEHUB_CACHE", Path.home() / ".cache" / "spokehub"))


@functools.cache
def llama_server_bin() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "llamacpp.sh")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@functools.cache
def tiny_model(seed: int = 0, name: str = "tiny") -> Path:
    vocab = llama_server_bin().parent.parent / "vocab" / "ggml-vocab-llama-spm.gguf"
    out = CACHE / "models" / f"{name}-s{seed}.gguf"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "tinymodel.py"), "--vocab", str(vocab),
                    "--out", str(out), "--seed", str(seed), "--name", name],
                   check=True, stdout=subprocess.DEVNULL)
    return out


@dataclass
class LlamaWorker:
    alias: str
    log_dir: Path
    seed: int = 0
    slots: int = 2
    threads: int = 1
    ctx: int = 0  # total context; 0 = 512 per slot
    # /v1/embeddings as well as generation (mean pooling). This llama.cpp build
    # aborts at start-up with embeddings and an odd slot count, so it is opt-in.
    embeddings: bool = False
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> LlamaWorker:
        argv = [str(llama_server_bin()), "-m", str(tiny_model(self.seed)),
                "--host", "127.0.0.1", "--port", str(self.port), "--alias", self.alias,
                "-c", str(self.ctx or 512 * self.slots), "-np", str(self.slots),
                "-t", str(self.threads),
                "--slots", "--no-webui", *self.extra]
        if self.embeddings:
            argv += ["--embeddings", "--pooling", "mean"]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(llama_server_bin().parent)
        self.proc = Proc(argv, self.log_dir / f"llama-{self.alias}-{self.port}.log", env)
        self.proc.start()
        if wait:
            self.start_wait()
        return self

    def start_wait(self) -> None:
        assert self.proc is not None
        wait_http(f"{self.url}/health", self.proc.proc, timeout=60)

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
