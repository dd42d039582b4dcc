"""deploy/several/ (two hubs, Redis, HAProxy) and the --processes systemd drop-in:
HAProxy's own check accepts the config, the compose file is valid for a real compose
tool and agrees with the hub and agent configs it mounts, and systemd accepts the
drop-in."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from agent.config import parse_config as parse_agent_config
from hub.cli.main import build_parser
from hub.config.schema import parse_config
from tests.agent.test_systemd import root, systemd_analyze, verify  # noqa: F401
from tests.deploy.tools import DEPLOY, require, run
from tests.support.procs import ROOT, Proc, free_port
from tests.support.redis_proc import redis_server_bin

SEVERAL = DEPLOY / "several"
HAPROXY_CFG = SEVERAL / "haproxy.cfg"
COMPOSE = SEVERAL / "compose.yml"
DROP_IN = ROOT / "systemd" / "spokehub-hub.service.d" / "processes.conf"


def haproxy() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                        if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        pytest.fail("haproxy not found: apt-get install haproxy", pytrace=False)
    return path


def test_haproxy_accepts_the_shipped_config() -> None:
    out = run([haproxy(), "-c", "-f", str(HAPROXY_CFG)])
    assert out.returncode == 0, out.stdout + out.stderr
    warnings = [line for line in (out.stdout + out.stderr).splitlines() if "WARNING" in line]
    # The only warnings: the compose service names do not resolve outside Docker.
    assert all("could not resolve address 'hub" in w for w in warnings), warnings


def test_haproxy_config_retries_only_what_is_safe() -> None:
    text = HAPROXY_CFG.read_text()
    lines = {line.strip() for line in text.splitlines() if not line.strip().startswith("#")}
    assert "retry-on conn-failure empty-response" in lines
    assert "option redispatch 1" in lines and "retries 3" in lines
    assert "option httpchk GET /healthz" in lines
    assert not any("response-timeout" in line for line in lines), \
        "a slow generation must not be run twice"
    assert re.findall(r"^\s*server (\S+) (\S+)", text, re.M) == [("hub1", "hub1:8080"),
                                                                 ("hub2", "hub2:8080")]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    out = run([require("docker-compose"), "-f", str(COMPOSE), "config"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = yaml.safe_load(out.stdout)
    return doc


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = Path(source)
    return out


def test_compose_has_two_hubs_redis_and_haproxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"haproxy", "hub1", "hub2", "redis", "llama1", "llama2", "agent"} <= set(services)
    assert _mounts(services["haproxy"]) == {
        "/usr/local/etc/haproxy/haproxy.cfg": HAPROXY_CFG}
    assert services["haproxy"]["ports"] == ["127.0.0.1:8080:8080/tcp"]
    assert "ports" not in services["hub1"] and "ports" not in services["hub2"]


@pytest.mark.parametrize("name", ["hub1", "hub2"])
def test_compose_hubs_run_a_valid_shared_state_config(compose: dict[str, Any], name: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    service = compose["services"][name]
    argv = service["command"]
    assert argv[0] == "spokehub"
    args = build_parser().parse_args(argv[1:])
    assert args.processes == "auto"
    config_file = _mounts(service)[args.config]
    env = service["environment"]
    monkeypatch.setenv("SPOKEHUB_REDIS_URL", env["SPOKEHUB_REDIS_URL"])
    config = parse_config(yaml.safe_load(config_file.read_text()))
    assert config.state.backend == "redis"
    assert config.state.url().startswith("redis://redis:")
    assert config.listen.port == 8080  # where haproxy.cfg sends requests


def test_compose_agent_fails_over_between_the_two_hubs(compose: dict[str, Any]) -> None:
    service = compose["services"]["agent"]
    config_file = _mounts(service)["/etc/spokehub/agent.yaml"]
    config = parse_agent_config(yaml.safe_load(config_file.read_text()),
                                service["environment"])
    assert config.hubs == ("http://hub1:8080", "http://hub2:8080")


def test_systemd_accepts_the_processes_drop_in(root: Path) -> None:  # noqa: F811
    tool = systemd_analyze()
    drop_dir = root / "etc/systemd/system/spokehub-hub.service.d"
    drop_dir.mkdir()
    shutil.copy(DROP_IN, drop_dir / "processes.conf")
    proc = verify(tool, root, "spokehub-hub.service")
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", \
        proc.stdout + proc.stderr
    text = DROP_IN.read_text()
    execs = re.findall(r"^ExecStart=(.*)$", text, re.M)
    assert execs[0] == "", "the drop-in must clear the unit's ExecStart first"
    args = build_parser().parse_args(execs[1].split()[1:])
    assert args.processes == "auto"
    unit = (ROOT / "systemd" / "spokehub-hub.service").read_text()
    assert "KillMode=mixed\n" in unit  # the supervisor stops its children itself


def test_redis_conf_lets_only_the_hubs_in(tmp_path: Path) -> None:
    """Debian's redis-server runs deploy/several/redis.conf (address and directory
    changed on the command line): the hubs' user reads, writes and publishes; the
    default user is refused."""
    port = free_port()
    proc = Proc([redis_server_bin(), str(SEVERAL / "redis.conf"), "--bind", "127.0.0.1",
                 "--port", str(port), "--dir", str(tmp_path)], tmp_path / "redis.log")
    proc.start()
    hub = redis.Redis(host="127.0.0.1", port=port, username="spokehub", password="CHANGE-ME",
                      socket_timeout=5)
    anonymous = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert hub.ping()
                break
            except redis.ConnectionError:
                assert proc.alive() and time.monotonic() < deadline, proc.log()
                time.sleep(0.05)
        assert hub.set("spokehub:test", "1") and hub.get("spokehub:test") == b"1"
        hub.publish("spokehub:events", b"x")
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with pytest.raises(redis.ResponseError, match="no permissions"):
            hub.config_get("save")  # no admin commands for the hubs
    finally:
        hub.close()
        anonymous.close()
        proc.stop()


def test_hub_env_example_holds_a_url_the_hubs_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line for line in (SEVERAL / "hub.env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    name, value = lines[0].split("=", 1)
    assert name == "SPOKEHUB_REDIS_URL"
    monkeypatch.setenv(name, value)
    assert parse_config({"state": {"backend": "redis"}}).state.url() == value
