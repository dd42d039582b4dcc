"""deploy/docker-compose.yml: valid for a real compose tool, and every service's
command, ports and mounted files agree with what the project ships.

No container registry is reachable here, so no image is pulled or built and the
stack is not started; docker-compose (Debian's package) validates and normalises
the file offline.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from agent.config import parse_config as parse_agent_config
from tests.deploy.tools import COMPOSE_FILE, DEPLOY, GRAFANA_DIR, HUB_JOB, PROM_DIR, require, run
from tests.support.llama import llama_server_bin, tiny_model
from tests.support.procs import ROOT, Proc, free_port, wait_http

SERVICES = {"hub", "llama1", "llama2", "agent", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (absolute host paths, long
    syntax for depends_on and ports)."""
    out = run([require("docker-compose"), "-f", str(COMPOSE_FILE), "config"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = yaml.safe_load(out.stdout)
    return doc


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path -> host path."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def _arg(argv: list[str], flag: str) -> str:
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {argv}")


def _published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, all published on 127.0.0.1 only."""
    out = {}
    for spec in service.get("ports", []):
        host_ip, host, container = str(spec).removesuffix("/tcp").split(":")
        assert host_ip == "127.0.0.1", f"{spec}: publish on 127.0.0.1 only"
        out[int(container)] = int(host)
    return out


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), re.sub(r"\s+", " ", rest.strip())))
    return out


def _hub_config(compose: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    hub = compose["services"]["hub"]
    path = _mounts(hub)[_arg(hub["command"], "--config")]
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return path, config


def test_compose_tool_accepts_the_file() -> None:
    version = run([require("docker-compose"), "version", "--short"]).stdout.strip()
    out = run([require("docker-compose"), "-f", str(COMPOSE_FILE), "config", "--quiet"],
              cwd=ROOT)
    assert out.returncode == 0, (version, out.stderr)


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_every_mounted_file_is_shipped(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert source.resolve().is_relative_to(DEPLOY), f"{name}: {source} outside deploy/"


def test_images_are_built_from_shipped_dockerfiles(compose: dict[str, Any]) -> None:
    built: dict[str, set[Path]] = {}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        context = Path(service["build"]["context"])
        dockerfile = context / service["build"]["dockerfile"]
        assert context == ROOT and dockerfile.is_file(), name
        built.setdefault(service["image"], set()).add(dockerfile)
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text()
        for instr, args in _dockerfile_instructions(dockerfile):
            if instr != "COPY" or args.startswith("--from"):
                continue
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert (context / src).exists(), f"{dockerfile.name}: COPY {src}: missing"
                assert f"!{src}" in ignore, f"{dockerfile.name}: {src} is .dockerignored"
    # One Dockerfile per image, whichever services build it.
    assert all(len(files) == 1 for files in built.values()), built
    assert {"spokehub:local", "spokehub-llama-server:local"} <= set(built)


def test_hub_service_runs_a_valid_config_on_its_published_port(
        compose: dict[str, Any]) -> None:
    hub = compose["services"]["hub"]
    assert hub["command"][:2] == ["spokehub", "serve"]
    dockerfile = DEPLOY / "hub.Dockerfile"
    cmd = [a for i, a in _dockerfile_instructions(dockerfile) if i == "CMD"][-1]
    assert yaml.safe_load(cmd) == hub["command"], "image CMD and compose command differ"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"spokehub", "spokehub-agent"} <= set(scripts)
    path, config = _hub_config(compose)
    check = run([sys.executable, "-m", "hub", "check-config", str(path)], cwd=ROOT)
    assert check.returncode == 0, check.stderr
    port = config["listen"]["port"]
    assert config["listen"]["host"] == "0.0.0.0"  # reachable from the other containers
    assert port in _published(hub)
    assert f"127.0.0.1:{port}/healthz" in " ".join(hub["healthcheck"]["test"])
    metrics_public = "/metrics" in config.get("auth", {}).get("public_paths", ["/metrics"])
    assert not config["auth"]["enabled"] or metrics_public


def test_workers_are_where_the_hub_and_agent_look(compose: dict[str, Any]) -> None:
    services = compose["services"]
    _, config = _hub_config(compose)
    llama_ports = {}
    for name in ("llama1", "llama2"):
        argv = services[name]["command"]
        assert _arg(argv, "--host") == "0.0.0.0"
        assert _arg(argv, "-m") == "/models/tiny.gguf"
        assert _arg(argv, "--alias") == "tiny"
        llama_ports[name] = int(_arg(argv, "--port"))
    (static,) = config["workers"]
    url = urlsplit(static["url"])
    assert (url.hostname, url.port, static["kind"]) == ("llama1", llama_ports["llama1"],
                                                         "llamacpp")
    assert config["aliases"]["gpt-4o-mini"] == "tiny"

    agent = services["agent"]
    assert agent["network_mode"] == "service:llama2"
    assert agent["command"][0] == "spokehub-agent"
    agent_path = _mounts(agent)[_arg(agent["command"], "--config")]
    parsed = parse_agent_config(yaml.safe_load(agent_path.read_text()), agent["environment"])
    hub_url = urlsplit(parsed.hub_url or "")
    assert (hub_url.hostname, hub_url.port) == ("hub", config["listen"]["port"])
    (target,) = parsed.targets()
    assert urlsplit(target.url).port == llama_ports["llama2"]
    assert target.advertise_url == f"http://llama2:{llama_ports['llama2']}"
    assert config["agents"]["enabled"] is not False


def test_llama_image_is_built_like_llamacpp_sh() -> None:
    dockerfile = DEPLOY / "llama-server.Dockerfile"
    instructions = _dockerfile_instructions(dockerfile)
    script = (ROOT / "scripts" / "llamacpp.sh").read_text()
    default = re.search(r'VERSION="\$\{SPOKEHUB_LLAMA_CPP_PY_VERSION:-([^}]+)\}"', script)
    assert default
    assert ("ARG", f"LLAMA_CPP_PY_VERSION={default.group(1)}") in instructions
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert "bash scripts/llamacpp.sh" in runs and "patchelf" in runs
    assert "--out /models/tiny.gguf" in runs
    vocab = re.search(r"--vocab /opt/llama\.cpp/vocab/(\S+)", runs)
    assert vocab and (llama_server_bin().parent.parent / "vocab" / vocab.group(1)).is_file()
    (entry,) = [yaml.safe_load(a) for i, a in instructions if i == "ENTRYPOINT"]
    assert entry == ["/opt/llama.cpp/bin/llama-server"]
    assert ("COPY", "--from=build /opt/llama.cpp/bin /opt/llama.cpp/bin") in instructions


def test_llama_command_is_accepted_by_llama_server(compose: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """llama1's command, run by the cached llama-server with only the model path and
    the address changed: it starts and answers /health."""
    argv = list(compose["services"]["llama1"]["command"])
    port = free_port()
    replace = {"-m": str(tiny_model(0)), "--host": "127.0.0.1", "--port": str(port)}
    for i, arg in enumerate(argv[:-1]):
        if arg in replace:
            argv[i + 1] = replace[arg]
    proc = Proc([str(llama_server_bin()), *argv], tmp_path / "llama.log", {"PATH": "/usr/bin:/bin"})
    proc.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc.proc, timeout=60)
    finally:
        proc.stop()


def test_prometheus_service_loads_the_shipped_config_and_rules(
        compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    mounts = _mounts(prom)
    config_target = _arg(prom["command"], "--config.file")
    assert mounts[config_target] == PROM_DIR / "prometheus.yml"
    config = yaml.safe_load(mounts[config_target].read_text())
    for rule_file in config["rule_files"]:
        target = str(Path(config_target).parent / rule_file)
        assert mounts[target] == PROM_DIR / rule_file
    (hub_job,) = [j for j in config["scrape_configs"] if j["job_name"] == HUB_JOB]
    _, hub_config = _hub_config(compose)
    assert hub_job["static_configs"] == [{"targets": [f"hub:{hub_config['listen']['port']}"]}]
    port = int(_arg(prom["command"], "--web.listen-address").rsplit(":", 1)[1])
    assert port in _published(prom)
    assert _arg(prom["command"], "--storage.tsdb.path") in {
        v.split(":")[1] for v in prom["volumes"] if not v.startswith("/")}


def test_grafana_service_provisions_prometheus_and_the_dashboard(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    prov = GRAFANA_DIR / "provisioning"
    assert mounts["/etc/grafana/provisioning/datasources"] == prov / "datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == prov / "dashboards"
    (source,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    url = urlsplit(source["url"])
    prom_port = int(_arg(services["prometheus"]["command"], "--web.listen-address")
                    .rsplit(":", 1)[1])
    assert (url.hostname, url.port) == ("prometheus", prom_port)
    (provider,) = yaml.safe_load((prov / "dashboards" / "spokehub.yml").read_text())[
        "providers"]
    dash_dir = provider["options"]["path"]
    assert mounts[dash_dir] == GRAFANA_DIR / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(dash_dir)
    assert (GRAFANA_DIR / "dashboards" / Path(home).name).is_file()
    assert 3000 in _published(grafana)
