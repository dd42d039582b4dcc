"""deploy/stack/run.sh: the compose stack as plain processes on 127.0.0.1.

Started in the background, checked through its Prometheus (the hub target is up,
both workers are up, one of them registered by the agent), used, and stopped; every
process it started is gone afterwards (and killed by PID here if not).
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

from tests.deploy.prom import wait_until
from tests.deploy.tools import DEPLOY, HUB_JOB, require, run
from tests.e2e.fleet import child_env
from tests.support.procs import free_port

SCRIPT = DEPLOY / "stack" / "run.sh"
DEADLINE_S = 90.0
PROCESSES = {"llama1", "llama2", "hub", "agent", "prometheus"}


def _recorded(pids: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for line in pids.read_text().splitlines():
        name, pid, start = line.split()
        out[name] = (int(pid), start)
    return out


def _alive(pid: int, start: str) -> bool:
    """Is ``pid`` still the process the script started (same start time, not a zombie)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == start


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def test_stack_script_starts_everything_and_stops_it(tmp_path: Path) -> None:
    require("prometheus")
    stack_dir = tmp_path / "stack"
    env = child_env(SPOKEHUB_STACK_HUB_PORT=str(free_port()),
                    SPOKEHUB_STACK_LLAMA1_PORT=str(free_port()),
                    SPOKEHUB_STACK_LLAMA2_PORT=str(free_port()),
                    SPOKEHUB_STACK_PROM_PORT=str(free_port()),
                    SPOKEHUB_STACK_INTERVAL="1s")
    recorded: dict[str, tuple[int, str]] = {}
    try:
        started = run(["bash", str(SCRIPT), "start", "--dir", str(stack_dir)], env=env,
                      timeout=300)
        if (stack_dir / "pids").exists():
            recorded = _recorded(stack_dir / "pids")
        assert started.returncode == 0, started.stderr
        assert set(recorded) == PROCESSES
        assert all(_alive(*p) for p in recorded.values())
        urls = dict(line.split("=", 1) for line in
                    (stack_dir / "stack.env").read_text().splitlines())
        prom, hub = urls["SPOKEHUB_STACK_PROMETHEUS_URL"], urls["SPOKEHUB_STACK_HUB_URL"]

        def hub_target_up() -> bool:
            targets = _get(f"{prom}/api/v1/targets")["data"]["activeTargets"]
            return [t["health"] for t in targets if t["labels"]["job"] == HUB_JOB] == ["up"]

        wait_until(hub_target_up, DEADLINE_S, "Prometheus scrapes the stack's hub")

        def workers_up() -> list[str]:
            result = _get(f"{prom}/api/v1/query?query=spokehub_worker_up%3D%3D1")["data"]
            return sorted(r["metric"]["worker"] for r in result["result"])

        port2 = env["SPOKEHUB_STACK_LLAMA2_PORT"]
        assert wait_until(lambda: len(workers_up()) == 2 and workers_up(), DEADLINE_S,
                          "both workers up in Prometheus") == [f"box2-llamacpp-{port2}",
                                                               "llama1"]
        groups = {g["name"] for g in _get(f"{prom}/api/v1/rules")["data"]["groups"]}
        assert groups == {"spokehub.records", "spokehub.alerts"}
        body = json.dumps({"model": "tiny", "max_tokens": 2,
                           "messages": [{"role": "user", "content": "Hi"}]}).encode()
        req = urllib.request.Request(f"{hub}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200

        status = run(["bash", str(SCRIPT), "status", "--dir", str(stack_dir)], env=env)
        assert status.returncode == 0 and status.stdout.count("running") == len(PROCESSES)
        again = run(["bash", str(SCRIPT), "start", "--dir", str(stack_dir)], env=env)
        assert again.returncode == 1 and "first:" in again.stderr  # no second stack

        stopped = run(["bash", str(SCRIPT), "stop", "--dir", str(stack_dir)], env=env,
                      timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert not (stack_dir / "pids").exists()
        left = {n for n, p in recorded.items() if _alive(*p)}
        assert not left, f"still running after stop: {left}"
    finally:
        for pid, start in recorded.values():
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)
