#!/usr/bin/env python3
"""Run a hub with real llama.cpp workers on this machine.

Starts one ``llama-server`` per local llama.cpp worker in the config (a tiny
generated model, served under the model name ``tiny``), then ``spokehub serve``.
Ports that are busy are replaced by free ones in an effective config written to
``.run/hub.yaml``. Ctrl-C (or SIGTERM) stops every process this script started.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SPOKEHUB_CACHE", Path.home() / ".cache" / "spokehub"))
MODEL_NAME = "tiny"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ok(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready in {timeout}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--config", default=str(ROOT / "configs" / "example.yaml"))
    args = ap.parse_args()
    config: dict[str, Any] = yaml.safe_load(Path(args.config).read_text())
    rundir = ROOT / ".run"
    rundir.mkdir(exist_ok=True)
    bin_path = Path(subprocess.run(["bash", str(ROOT / "scripts" / "llamacpp.sh")], check=True,
                                   stdout=subprocess.PIPE, text=True).stdout.split()[-1])
    vocab = bin_path.parent.parent / "vocab" / "ggml-vocab-llama-spm.gguf"
    procs: list[subprocess.Popen[bytes]] = []

    def stop_all(*_: object) -> None:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    env = {**os.environ, "LD_LIBRARY_PATH": str(bin_path.parent)}
    for i, worker in enumerate(config.get("workers") or []):
        parts = urlsplit(worker["url"])
        if worker.get("kind", "llamacpp") != "llamacpp" or parts.hostname not in (
                "127.0.0.1", "localhost"):
            continue
        port = parts.port or 80
        if not port_free(port):
            port = free_port()
            worker["url"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        model = CACHE / "models" / f"{MODEL_NAME}-s{i}.gguf"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "tinymodel.py"), "--vocab",
                        str(vocab), "--out", str(model), "--seed", str(i), "--name", MODEL_NAME],
                       check=True, stdout=subprocess.DEVNULL)
        log = (rundir / f"{worker['name']}.log").open("wb")
        proc = subprocess.Popen([str(bin_path), "-m", str(model), "--host", "127.0.0.1",
                                 "--port", str(port), "--alias", MODEL_NAME, "-np", "2",
                                 "-c", "4096", "-t", "1", "--embeddings", "--pooling", "mean",
                                 "--no-webui"], stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        print(f"worker {worker['name']}: llama-server on {worker['url']} "
              f"(log: .run/{worker['name']}.log)")
    for proc, worker in zip(procs, config.get("workers") or [], strict=False):
        wait_ok(f"{worker['url']}/health", proc)

    listen = config.setdefault("listen", {})
    if not port_free(int(listen.get("port", 8080))):
        listen["port"] = free_port()
    host, port = listen.get("host", "127.0.0.1"), listen.get("port", 8080)
    effective = rundir / "hub.yaml"
    effective.write_text(yaml.safe_dump(config, sort_keys=False))
    spokehub = Path(sys.executable).with_name("spokehub")
    hub = subprocess.Popen([str(spokehub), "serve", "--config", str(effective)])
    procs.append(hub)
    wait_ok(f"http://{host}:{port}/readyz", hub)
    print(f"""
spokehub is up on http://{host}:{port}
with {len(procs) - 1} llama.cpp workers serving model "{MODEL_NAME}".
Try it:
  curl -s http://{host}:{port}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{MODEL_NAME}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
  curl -sN http://{host}:{port}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{MODEL_NAME}", "stream": true,
         "messages": [{{"role": "user", "content": "Hi"}}]}}'
  python -c 'import openai; c = openai.OpenAI(base_url="http://{host}:{port}/v1", \\
api_key="x"); print(c.chat.completions.create(model="{MODEL_NAME}", \\
messages=[{{"role": "user", "content": "Hi"}}]))'
Workers: http://{host}:{port}/admin/workers   Metrics: http://{host}:{port}/metrics
Press Ctrl-C to stop.""", flush=True)
    while True:
        for p in procs:
            if p.poll() is not None:
                print(f"process {p.pid} exited with {p.returncode}; stopping", flush=True)
                stop_all()
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
