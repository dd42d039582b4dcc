"""``spokehub serve --processes 2`` passes the same functional checks as one process.

Each check runs against a real hub started with ``--processes 1`` and ``--processes 2``
(two children on one SO_REUSEPORT port, the supervisor's private redis-server between
them) in front of two real llama.cpp workers. With two processes the checks also see
that both children serve, that SIGHUP reaches each of them (through each child's own
port, ``--child-port-base``), that a killed child is restarted, and that SIGTERM drains
every child and exits 0.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
import yaml

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.support.closing import closing
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.procs import ROOT, free_port, wait_http

MESSAGES: list[Any] = [{"role": "user", "content": "Say something."}]
DEADLINE_S = 60.0


@dataclass
class Hub:
    proc: HubProcess
    processes: int
    infer: str
    admin: str
    child_base: int | None

    def child_url(self, slot: int) -> str:
        assert self.child_base is not None
        return f"http://127.0.0.1:{self.child_base + slot}"


def _auth(tmp: Path) -> tuple[dict[str, Any], str, str, dict[str, str]]:
    env = {"SPOKEHUB_TEST_SECRET": secrets.token_hex(32)}
    section: dict[str, Any] = {"enabled": True, "keys": [
        {"kid": "t", "alg": "HS256", "secret_env": "SPOKEHUB_TEST_SECRET"}]}
    auth = parse_auth(section)
    infer = issue_token(auth, tenant="t", scopes=["infer"], ttl_s=3600, environ=env)
    admin = issue_token(auth, tenant="ops", scopes=["admin"], ttl_s=3600, environ=env)
    return section, infer, admin, env


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int, avoid: int) -> int:
    """The first of ``n`` consecutive free ports (none of them ``avoid``)."""
    while True:
        base = free_port()
        ports = range(base, base + n)
        if avoid not in ports and all(_bindable(p) for p in ports):
            return base


def start_hub(tmp: Path, workers: list[dict[str, Any]], processes: int) -> Hub:
    section, infer, admin, env = _auth(tmp)
    config = {"health": {"interval_s": 0.5, "timeout_s": 1}, "auth": section,
              "shutdown_grace_s": 30, "workers": workers}
    proc = HubProcess(config, tmp, env)
    base = None
    if processes > 1:
        base = free_ports(processes, avoid=proc.port)
        proc.proc.argv += ["--processes", str(processes), "--child-port-base", str(base)]
    proc.start()
    hub = Hub(proc, processes, infer, admin, base)
    if base is not None:
        for slot in range(processes):
            wait_http(f"{hub.child_url(slot)}/healthz", proc.proc.proc, timeout=DEADLINE_S)
    return hub


def llama_workers(pair: tuple[LlamaWorker, LlamaWorker]) -> list[dict[str, Any]]:
    return [{"name": f"w{i}", "url": w.url} for i, w in enumerate(pair)]


@pytest.fixture(scope="module", params=[1, 2], ids=["1-process", "2-processes"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        llama_pair: tuple[LlamaWorker, LlamaWorker]) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp(f"processes{request.param}")
    h = start_hub(tmp, llama_workers(llama_pair), request.param)
    try:
        yield h
    finally:
        assert h.proc.stop() == 0, h.proc.proc.log()


def client(hub: Hub) -> openai.OpenAI:
    return closing(openai.OpenAI(base_url=hub.proc.base_url, api_key=hub.infer,
                                 max_retries=0, timeout=60))


def call(url: str, token: str | None = None, body: bytes | None = None,
         method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (so SO_REUSEPORT may pick any child)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


# -- the functional checks, for 1 and 2 processes ----------------------------------------


def test_chat_non_stream(hub: Hub) -> None:
    resp = client(hub).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8)
    assert resp.object == "chat.completion"
    assert resp.usage is not None and resp.usage.completion_tokens > 0


def test_chat_stream(hub: Hub) -> None:
    chunks = list(client(hub).chat.completions.create(model="tiny", messages=MESSAGES,
                                                      max_tokens=16, stream=True))
    assert len(chunks) >= 4
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_embeddings(hub: Hub) -> None:
    resp = client(hub).embeddings.create(model="tiny", input=["hello", "world"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) > 0


def test_models_list(hub: Hub) -> None:
    assert "tiny" in {m.id for m in client(hub).models.list()}


def test_errors_400_401_404(hub: Hub) -> None:
    url = f"{hub.proc.url}/v1/chat/completions"
    for _ in range(6):  # several connections: whichever child answers, the same errors
        status, _, body = call(url, hub.infer, b"{not json")
        assert status == 400 and json.loads(body)["error"]["code"] == "invalid_json"
        status, _, body = call(url, None, json.dumps({"model": "tiny",
                                                      "messages": MESSAGES}).encode())
        assert status == 401 and "error" in json.loads(body)
        status, _, body = call(url, hub.infer, json.dumps({"model": "no-such-model",
                                                           "messages": MESSAGES}).encode())
        assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"


def test_healthz(hub: Hub) -> None:
    status, _, _ = call(f"{hub.proc.url}/healthz")
    assert status == 200


def test_every_process_serves(hub: Hub) -> None:
    """New connections reach every child (each answer names its process)."""
    seen: set[str | None] = set()
    deadline = time.monotonic() + DEADLINE_S
    want: set[str | None] = {str(i) for i in range(hub.processes)} if hub.processes > 1 \
        else {None}
    while seen != want and time.monotonic() < deadline:
        _, headers, _ = call(f"{hub.proc.url}/healthz")
        seen.add(headers.get("X-Spokehub-Process"))
        assert seen <= want, seen
    assert seen == want


def _reloads(log: str) -> int:
    return log.count("config reloaded from")


def _sees_worker(url: str, admin: str, name: str) -> bool:
    status, _, body = call(f"{url}/admin/workers", admin)
    return status == 200 and name in {w["name"] for w in json.loads(body)["workers"]}


def test_sighup_reload_reaches_every_process(hub: Hub, llama_pair: tuple[LlamaWorker,
                                                                          LlamaWorker]) -> None:
    before = _reloads(hub.proc.proc.log())
    extra = {"name": "w-reloaded", "url": llama_pair[1].url}
    hub.proc.write_config({**{k: v for k, v in hub.proc.config.items() if k != "listen"},
                           "workers": [*llama_workers(llama_pair), extra]})
    hub.proc.proc.signal(signal.SIGHUP)
    urls = [hub.child_url(i) for i in range(hub.processes)] if hub.processes > 1 \
        else [hub.proc.url]
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if all(_sees_worker(u, hub.admin, "w-reloaded") for u in urls) \
                and _reloads(hub.proc.proc.log()) >= before + hub.processes:
            break
        time.sleep(0.1)
    assert all(_sees_worker(u, hub.admin, "w-reloaded") for u in urls)
    assert _reloads(hub.proc.proc.log()) == before + hub.processes


def _child_pids(log: str) -> dict[int, int]:
    """slot -> pid of the newest start of each child, from the supervisor's log."""
    return {int(slot): int(pid)
            for slot, pid in re.findall(r"started hub process (\d+) \(pid (\d+)\)", log)}


def test_killed_process_is_restarted(hub: Hub) -> None:
    if hub.processes == 1:
        pytest.skip("one process: no supervisor (systemd restarts the hub)")
    old = _child_pids(hub.proc.proc.log())
    assert set(old) == set(range(hub.processes))
    os.kill(old[0], signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_S
    while _child_pids(hub.proc.proc.log()).get(0) == old[0]:
        assert time.monotonic() < deadline, hub.proc.proc.log()
        time.sleep(0.05)
    new = _child_pids(hub.proc.proc.log())
    assert new[0] != old[0] and new[1] == old[1]
    wait_http(f"{hub.child_url(0)}/healthz", hub.proc.proc.proc, timeout=DEADLINE_S)
    assert "hub process 0 died unexpectedly" in hub.proc.proc.log()
    # The kernel hands new connections to the living children again (those queued at
    # the killed one's socket were reset with it).
    for _ in range(20):
        assert call(f"{hub.proc.url}/healthz")[0] == 200
    resp = client(hub).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert resp.choices


def _private_redis(log: str) -> tuple[int, Path]:
    """(pid, socket path) of the newest private redis-server, from the log."""
    found = re.findall(r"private redis-server \(pid (\d+)\) on (\S+?)\"", log)
    assert found, log
    return int(found[-1][0]), Path(found[-1][1])


def _ping(path: Path) -> bool:
    client = redis.Redis.from_url(f"unix://{path}", socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def test_private_redis_is_private_and_shared_by_the_processes(hub: Hub) -> None:
    if hub.processes == 1:
        pytest.skip("one process: nothing to share")
    _pid, path = _private_redis(hub.proc.proc.log())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert _ping(path)
    for child in _child_pids(hub.proc.proc.log()).values():
        env = dict(item.split("=", 1) for item in
                   Path(f"/proc/{child}/environ").read_text().split("\0") if "=" in item)
        assert env["SPOKEHUB_STATE_BACKEND"] == "redis"
        assert env["SPOKEHUB_REDIS_URL"] == f"unix://{path}"


def test_private_redis_is_restarted_on_the_same_socket(hub: Hub) -> None:
    if hub.processes == 1:
        pytest.skip("one process: no private Redis")
    pid, path = _private_redis(hub.proc.proc.log())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_S
    while _private_redis(hub.proc.proc.log())[0] == pid:
        assert time.monotonic() < deadline, hub.proc.proc.log()
        time.sleep(0.05)
    assert _private_redis(hub.proc.proc.log())[1] == path
    assert "the private redis-server exited" in hub.proc.proc.log()
    assert _ping(path)
    assert call(f"{hub.proc.url}/healthz")[0] == 200


# -- graceful stop: its own hub, since it ends it --------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_drains_and_exits_0(processes: int, tmp_path: Path) -> None:
    """A stream in flight when SIGTERM arrives completes; every process exits 0."""
    slow = FaultWorker(tmp_path, "slow", "ok", delay_s=0.1, chunks=20).start()
    hub = None
    try:
        hub = start_hub(tmp_path, [{"name": "slow", "url": slow.url}], processes)
        body = json.dumps({"model": "slow", "messages": MESSAGES, "stream": True}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", hub.proc.port, timeout=60)
        got: list[bytes] = []
        first = threading.Event()

        def read() -> None:
            conn.request("POST", "/v1/chat/completions", body,
                         {"Content-Type": "application/json",
                          "Authorization": f"Bearer {hub.infer}"})
            resp = conn.getresponse()
            assert resp.status == 200
            while line := resp.readline():
                got.append(line)
                first.set()

        reader = threading.Thread(target=read)
        reader.start()
        try:
            assert first.wait(DEADLINE_S)
            hub.proc.proc.signal(signal.SIGTERM)
            assert hub.proc.proc.proc is not None
            assert hub.proc.proc.proc.wait(DEADLINE_S) == 0, hub.proc.proc.log()
        finally:
            reader.join(DEADLINE_S)
            conn.close()
        assert b"data: [DONE]\n" in got
        assert sum(1 for line in got if line.startswith(b"data: {")) == 20
        log = hub.proc.proc.log()
        if processes > 1:
            assert log.count("spokehub stopped") == processes
            assert all(f"hub process {i} exited with 0" in log for i in range(processes))
            assert "spokehub supervisor stopped" in log
            redis_pid, path = _private_redis(log)
            assert not path.parent.exists(), "the private Redis' directory is removed"
            assert not Path(f"/proc/{redis_pid}").exists() or \
                Path(f"/proc/{redis_pid}/stat").read_text().split()[2] == "Z"
    finally:
        if hub is not None:
            hub.proc.stop()
        slow.stop()


# -- refusals -----------------------------------------------------------------------------


def _serve(tmp: Path, config: dict[str, Any], *args: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "hub", "serve", "--config", str(path), *args],
                          check=False, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_port_0_is_refused_with_several_processes(tmp_path: Path) -> None:
    out = _serve(tmp_path, {"listen": {"host": "127.0.0.1", "port": 0}}, "--processes", "2")
    assert out.returncode == 2
    assert "listen.port: 0" in out.stderr and "--processes 2" in out.stderr


def test_missing_redis_server_is_a_clear_error(tmp_path: Path) -> None:
    out = _serve(tmp_path, {"listen": {"host": "127.0.0.1", "port": free_port()}},
                 "--processes", "2", env={"PATH": str(tmp_path)})
    assert out.returncode == 2
    assert "redis-server" in out.stderr and "state.backend: redis" in out.stderr


def test_bad_processes_value(tmp_path: Path) -> None:
    out = _serve(tmp_path, {}, "--processes", "many")
    assert out.returncode == 2 and "--processes" in out.stderr
