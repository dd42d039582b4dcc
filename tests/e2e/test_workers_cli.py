"""``spokehub workers`` as a real subprocess against a real hub (JWT auth on) with a
static llama.cpp worker, an agent-registered one and a dead one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from hub.cli.workers_table import COLUMNS, render_table, scrub
from tests.e2e.fleet import (
    JWT_ENV,
    AgentProcess,
    admin_workers,
    auth_section,
    call,
    child_env,
    issue_token,
    jwt_secret,
    wait_for,
)
from tests.support.closing import closing
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.procs import free_port


@dataclass
class Setup:
    hub: HubProcess
    admin: str
    infer: str
    agent_worker: str
    workdir: Path

    def token_file(self, token: str, name: str = "token") -> Path:
        path = self.workdir / name
        path.write_text(token + "\n")
        path.chmod(0o600)
        return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, logdir: Path) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("workers-cli")
    static = LlamaWorker("tiny", logdir, seed=0, slots=1)
    boxed = LlamaWorker("tiny", logdir, seed=1, slots=2)
    hub = HubProcess({
        "auth": auth_section(),
        "health": {"interval_s": 0.5, "timeout_s": 1},
        "agents": {"ttl_s": 30},
        "workers": [{"name": "static1", "url": static.url},
                    {"name": "dead1", "url": f"http://127.0.0.1:{free_port()}",
                     "models": ["tiny"]}],
    }, workdir, child_env(**{JWT_ENV: jwt_secret()}))
    agent: AgentProcess | None = None
    try:
        static.start(wait=False)
        boxed.start(wait=False)
        static.start_wait()
        boxed.start_wait()
        hub.start()
        admin = issue_token(hub, "admin")
        agent = AgentProcess(workdir, hub.url, issue_token(hub, "agent"), [boxed]).start()
        name = agent.worker_name(boxed)
        wait_for(lambda: {"static1", name} <= {n for n, w in admin_workers(hub, admin).items()
                                               if w["healthy"]}, 30, "both workers up")
        yield Setup(hub, admin, issue_token(hub, "infer"), name, workdir)
    finally:
        if agent is not None:
            agent.stop()
        hub.stop()
        static.stop()
        boxed.stop()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "hub", "workers", *args],
                         env=child_env(**env), capture_output=True, text=True, timeout=60,
                         check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def table(stdout: str) -> dict[str, dict[str, str]]:
    """Rows of the table by worker name, cells by column header."""
    lines = stdout.splitlines()
    header = lines[0]
    starts = [header.index(col) for col in COLUMNS]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def test_table_shows_every_worker(setup: Setup) -> None:
    # Traffic first, so latency is known for the static worker.
    client = closing(openai.OpenAI(base_url=setup.hub.base_url, api_key=setup.infer, max_retries=0))
    for _ in range(4):
        client.chat.completions.create(model="tiny", max_tokens=2,
                                       messages=[{"role": "user", "content": "hi"}])
    token_file = setup.token_file(setup.admin)
    out = cli("--hub", setup.hub.url, "--token-file", str(token_file))
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert set(rows) == {"static1", "dead1", setup.agent_worker}, out.stdout
    static, dead, boxed = rows["static1"], rows["dead1"], rows[setup.agent_worker]
    assert (static["KIND"], static["SOURCE"], static["HEALTH"], static["BREAKER"],
            static["MODELS"], static["SLOTS"], static["VRAM FREE"]) == \
        ("llamacpp", "config", "up", "closed", "tiny", "0/1", "-")  # slots: the prober's
    assert static["IN-FLIGHT"] == "0" and static["EWMA"].endswith(("ms", " s"))
    assert (boxed["SOURCE"], boxed["HEALTH"], boxed["MODELS"], boxed["SLOTS"]) == \
        ("agent:box1", "up", "tiny", "0/2")
    assert dead["HEALTH"] == "down" and dead["EWMA"] == "-"
    # Summary line, and why the dead worker is down.
    assert "3 workers: 2 up, 1 down" in out.stdout
    assert any(line.strip().startswith("dead1:") for line in out.stdout.splitlines())

    # The token can come from the environment instead; --json is the hub's own answer.
    out = cli("--json", SPOKEHUB_HUB_URL=setup.hub.url, SPOKEHUB_TOKEN=setup.admin)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {w["name"] for w in doc["workers"]} == set(rows)
    assert "retry_budget" in doc


def test_drain_and_undrain(setup: Setup) -> None:
    token_file = str(setup.token_file(setup.admin, "admin.token"))
    hub = ["--hub", setup.hub.url]
    # Options go before or after the drain/undrain word.
    out = cli(*hub, "--token-file", token_file, "drain", "static1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("worker static1: draining"), out.stdout
    assert admin_workers(setup.hub, setup.admin)["static1"]["draining"] is True
    client = closing(openai.OpenAI(base_url=setup.hub.base_url, api_key=setup.infer, max_retries=0))
    served = {client.chat.completions.with_raw_response.create(
        model="tiny", max_tokens=1, messages=[{"role": "user", "content": "hi"}]
    ).headers["x-spokehub-worker"] for _ in range(6)}
    assert served == {setup.agent_worker}
    out = cli(*hub, "--token-file", token_file)
    assert table(out.stdout)["static1"]["HEALTH"] == "up, draining"

    out = cli("undrain", "static1", *hub, "--token-file", token_file, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["draining"] is False
    assert admin_workers(setup.hub, setup.admin)["static1"]["draining"] is False


def test_hub_errors_exit_1_with_the_hubs_message(setup: Setup) -> None:
    hub = ["--hub", setup.hub.url]
    out = cli(*hub)  # auth is on: no token
    assert out.returncode == 1 and out.stdout == ""
    assert "HTTP 401: Missing API key" in out.stderr and "--token-file" in out.stderr

    out = cli(*hub, "--token-file", str(setup.token_file(setup.infer, "infer.token")))
    assert out.returncode == 1
    assert "HTTP 403" in out.stderr and "'admin' scope" in out.stderr

    admin = str(setup.token_file(setup.admin, "admin2.token"))
    for action in ("drain", "undrain"):
        out = cli(*hub, "--token-file", admin, action, "no-such-worker")
        assert out.returncode == 1
        assert "HTTP 404: No worker named 'no-such-worker'" in out.stderr

    out = cli("--hub", f"http://127.0.0.1:{free_port()}", "--token-file", admin)
    assert out.returncode == 1 and "cannot reach the hub" in out.stderr
    assert out.stderr.count("\n") == 1  # one line, no traceback


def test_usage_errors_exit_2(setup: Setup) -> None:
    empty = setup.workdir / "empty.token"
    empty.write_text("\n")
    cases: list[tuple[list[str], str]] = [
        (["--hub", "ftp://hub:8080"], "must be an http:// or https:// URL"),
        (["--hub", "http://hub:99999"], "bad port"),
        (["--token-file", str(setup.workdir / "missing")], "cannot read"),
        (["--token-file", str(empty)], "is empty"),
        (["--timeout", "0"], "--timeout"),
        (["drain"], "NAME"),
        (["pause", "static1"], "invalid choice"),
    ]
    for args, message in cases:
        out = cli("--hub", setup.hub.url, *args) if args[0] != "--hub" else cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
    # A bad hub URL in the environment is named as such.
    out = cli(SPOKEHUB_HUB_URL="hub.internal:8080")
    assert out.returncode == 2 and "SPOKEHUB_HUB_URL" in out.stderr


def test_a_silent_agents_worker_is_shown_stale(
        make_secure_hub: Callable[..., HubProcess], make_llama: Callable[..., LlamaWorker],
        make_agent: Callable[..., AgentProcess]) -> None:
    """After its agent dies, a worker gets no traffic once the TTL has passed; the
    table must not call it plain "up" (its llama-server still answers the probes)."""
    llama = make_llama("tiny", slots=1)
    hub = make_secure_hub(ttl_s=2.0)
    admin, infer = issue_token(hub, "admin"), issue_token(hub, "infer")
    agent = make_agent(hub, issue_token(hub, "agent"), [llama])
    name = agent.worker_name(llama)
    wait_for(lambda: admin_workers(hub, admin).get(name, {}).get("healthy") is True, 15,
             "agent worker up")
    agent.kill()
    body = {"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    wait_for(lambda: call(f"{hub.base_url}/chat/completions", "POST", infer, body)[0] == 503,
             10, "no traffic after the TTL")
    out = cli("--hub", hub.url, SPOKEHUB_TOKEN=admin)
    assert out.returncode == 0, out.stderr
    health = table(out.stdout)[name]["HEALTH"]
    assert admin_workers(hub, admin)[name]["agent_stale"] is True
    assert health == "up, stale"


# -- what the hub reports is shown as text ------------------------------------------------

HOSTILE = "\x1b[2J\x1b[1;31mevil\x1b[0m\rmodel\x07"


def test_table_cells_are_stripped_of_escapes_and_credentials() -> None:
    """Agents and workers choose names, models and details; none of it may move the
    cursor, clear the screen, overwrite a line or show a URL's password."""
    out = render_table([{"name": "box-llamacpp-1\x1b]0;title\x07", "kind": "llamacpp",
                         "source": "agent:box\r\x1b[31m", "healthy": False,
                         "models": [HOSTILE, "ok\u202emodel"],
                         "detail": "connect to http://ops:pa55@10.0.0.1:8080 failed\r\x1b[K"}])
    for bad in ("\x1b", "\r", "\x07", "\u202e", "pa55"):
        assert bad not in out, (bad, out)
    assert "evil model" in out and "http://***@10.0.0.1:8080" in out
    assert "box-llamacpp-1" in out and "agent:box" in out
    assert scrub({"workers": [{"url": "http://a:b@127.0.0.1:9"}]}) == \
        {"workers": [{"url": "http://***@127.0.0.1:9"}]}


def test_cli_shows_hostile_model_names_safely(
        make_hub: Callable[..., HubProcess], make_fault: Callable[..., FaultWorker]) -> None:
    """A worker whose /v1/models names a model with terminal escapes: it never reaches
    the operator's terminal, as a table or JSON. (A config URL with a password is
    refused at load; the CLI's own scrubbing of URLs is tested above.)"""
    fault = make_fault(HOSTILE)
    url = f"http://127.0.0.1:{fault.port}"
    hub = make_hub({"health": {"interval_s": 0.3, "timeout_s": 1},
                    "workers": [{"name": "locked", "url": url}]})
    wait_for(lambda: admin_workers(hub, None)["locked"]["healthy"], 15, "worker up")
    out = cli("--hub", hub.url)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\r" not in out.stdout and "\x07" not in out.stdout
    assert table(out.stdout)["locked"]["MODELS"] == "evil model"
    out = cli("--hub", hub.url, "--json")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert json.loads(out.stdout)["workers"][0]["url"] == url
