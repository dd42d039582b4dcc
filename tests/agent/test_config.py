"""Agent config: YAML + environment, validation errors that name the key, exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import agent.config
from agent.cli import main
from agent.config import load_config, parse_config
from hub.config.kit import ConfigError
from tests.support.procs import ROOT

BASE: dict[str, Any] = {"hub_url": "http://hub.internal:8080/", "agent_id": "gpu-box-1"}
TOKEN_ENV = {"SPOKEHUB_AGENT_TOKEN": "t0ken"}


def parse(raw: dict[str, Any], env: dict[str, str] | None = None,
          **kw: Any) -> agent.config.AgentConfig:
    return parse_config(raw, TOKEN_ENV if env is None else env, **kw)


def test_full_config() -> None:
    cfg = parse({**BASE, "heartbeat_s": 2, "advertise_host": "10.0.0.5", "gpu": "nvidia",
                 "workers": [{"url": "http://127.0.0.1:8080/", "kind": "llamacpp"},
                             {"url": "http://127.0.0.1:11434", "kind": "ollama",
                              "name": "big-ollama"},
                             {"url": "http://127.0.0.1:8081"}]})
    assert cfg.hub_url == "http://hub.internal:8080"
    assert cfg.heartbeat_s == 2.0 and cfg.gpu == "nvidia"
    assert [(w.name, w.kind, w.url, w.advertise_url) for w in cfg.workers] == [
        ("gpu-box-1-llamacpp-8080", "llamacpp", "http://127.0.0.1:8080",
         "http://10.0.0.5:8080"),
        ("big-ollama", "ollama", "http://127.0.0.1:11434", "http://10.0.0.5:11434"),
        ("gpu-box-1-llamacpp-8081", "llamacpp", "http://127.0.0.1:8081",
         "http://10.0.0.5:8081"),
    ]
    assert cfg.targets() == cfg.workers  # listed workers: no discovery


def test_defaults_and_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "box7.dc1.example.com")
    cfg = parse({"hub_url": "https://hub"})
    assert cfg.agent_id == "box7.dc1.example.com"
    assert (cfg.heartbeat_s, cfg.gpu, cfg.discover, cfg.advertise_host) == \
        (5.0, "auto", True, None)
    targets = cfg.targets()
    assert [(t.name, t.url, t.kind, t.discovered) for t in targets] == [
        ("box7.dc1.example.com-llamacpp-8080", "http://127.0.0.1:8080", "llamacpp", True),
        ("box7.dc1.example.com-ollama-11434", "http://127.0.0.1:11434", "ollama", True)]
    assert parse({"hub_url": "https://hub", "discover": False}).targets() == ()
    # A hostname too long for an agent id falls back to its first label.
    monkeypatch.setattr(socket, "gethostname",
                        lambda: "node-0042." + "x" * 60 + ".example")
    assert parse({"hub_url": "https://hub"}).agent_id == "node-0042"


def test_environment_overrides(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o600)
    env = {"SPOKEHUB_HUB_URL": "http://10.1.1.1:9000", "SPOKEHUB_AGENT_ID": "env-box",
           "SPOKEHUB_ADVERTISE_HOST": "fd00::5", "SPOKEHUB_HEARTBEAT_S": "0.5",
           "SPOKEHUB_AGENT_TOKEN_FILE": str(token_file)}
    cfg = parse({**BASE, "heartbeat_s": 9, "workers": [{"url": "http://127.0.0.1:8080"}]},
                env)
    assert cfg.hub_url == "http://10.1.1.1:9000" and cfg.agent_id == "env-box"
    assert cfg.heartbeat_s == 0.5 and cfg.advertise_host == "fd00::5"
    assert cfg.workers[0].advertise_url == "http://[fd00::5]:8080"
    assert cfg.workers[0].name == "env-box-llamacpp-8080"
    assert cfg.token is not None and cfg.token.reveal() == "from-file"
    assert cfg.token_path == str(token_file)
    # The token variable wins over any file.
    both = parse({**BASE, "token_file": "/nonexistent"}, {**env, "SPOKEHUB_AGENT_TOKEN": "x"})
    assert both.token is not None and both.token.reveal() == "x" and both.token_path is None


def test_token_never_shown(tmp_path: Path) -> None:
    cfg = parse(BASE, {"SPOKEHUB_AGENT_TOKEN": "s3cr3t-value"})
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.token)
    assert f"{cfg.token}" == "Secret('***')"


def test_print_mode_needs_no_hub_or_token() -> None:
    cfg = parse({}, {}, require_hub=False)
    assert cfg.hub_url is None and cfg.token is None
    # --print never reads the secret, so a token file not yet in place is fine.
    cfg = parse({**BASE, "token_file": "/nonexistent"}, {}, require_hub=False)
    assert cfg.token is None and cfg.hub_url == "http://hub.internal:8080"


@pytest.mark.parametrize(("raw", "env", "message"), [
    ({"agent_id": "a"}, TOKEN_ENV, "hub_url: is required (or set SPOKEHUB_HUB_URL)"),
    ({**BASE, "hub_url": "ftp://hub"}, TOKEN_ENV, "hub_url: must be an http:// or https://"),
    ({**BASE, "hub_url": "http://hub:99999"}, TOKEN_ENV, "hub_url: bad port"),
    (BASE, {}, "token_file: is required (or set SPOKEHUB_AGENT_TOKEN"),
    ({**BASE, "token": "abc"}, TOKEN_ENV, "token: not allowed in the config file"),
    ({**BASE, "token_file": "/nonexistent/tok"}, {}, "token_file: cannot read "
                                                    "/nonexistent/tok: No such file"),
    ({**BASE, "hub": "x"}, TOKEN_ENV, "hub: unknown key"),
    ({**BASE, "agent_id": "bad id"}, TOKEN_ENV, "agent_id: use letters, digits"),
    ({**BASE, "agent_id": "a" * 49}, TOKEN_ENV, "agent_id: use letters, digits and _.:- "
                                               "(max 48)"),
    ({**BASE, "heartbeat_s": 0}, TOKEN_ENV, "heartbeat_s: must be between 0.1 and 3600"),
    ({**BASE, "heartbeat_s": "fast"}, TOKEN_ENV, "heartbeat_s: must be a number"),
    ({**BASE, "heartbeat_s": True}, TOKEN_ENV, "heartbeat_s: must be a number"),
    ({**BASE, "advertise_host": "http://10.0.0.5"}, TOKEN_ENV,
     "advertise_host: must be a host name or IP address"),
    ({**BASE, "advertise_host": "10.0.0.5:8080"}, TOKEN_ENV,
     "advertise_host: must be a host name or IP address"),
    ({**BASE, "discover": "yes"}, TOKEN_ENV, "discover: must be true or false"),
    ({**BASE, "gpu": "intel"}, TOKEN_ENV, "gpu: must be one of auto, nvidia, rocm, none"),
    ({**BASE, "log_level": "loud"}, TOKEN_ENV, "log_level: must be one of"),
    ({**BASE, "probe_timeout_s": 0}, TOKEN_ENV, "probe_timeout_s: must be between"),
    ({**BASE, "workers": {"url": "x"}}, TOKEN_ENV, "workers: must be a list"),
    ({**BASE, "workers": [{"url": f"http://a:{p}"} for p in range(1, 66)]}, TOKEN_ENV,
     "workers: at most 64 per agent, got 65"),
    ({**BASE, "workers": ["http://x"]}, TOKEN_ENV, "workers[0]: must be a mapping"),
    ({**BASE, "workers": [{"kind": "llamacpp"}]}, TOKEN_ENV, "workers[0].url: is required"),
    ({**BASE, "workers": [{"url": "localhost:8080"}]}, TOKEN_ENV,
     "workers[0].url: must be an http:// or https:// URL"),
    ({**BASE, "workers": [{"url": "http://a:1"}, {"url": "http://b:1", "kind": "vllm"}]},
     TOKEN_ENV, "workers[1].kind: must be one of llamacpp, ollama, got 'vllm'"),
    ({**BASE, "workers": [{"url": "http://a:1", "models": ["x"]}]}, TOKEN_ENV,
     "workers[0].models: unknown key"),
    ({**BASE, "workers": [{"url": "http://a:1", "name": "has space"}]}, TOKEN_ENV,
     "workers[0].name: use letters"),
    ({**BASE, "workers": [{"url": "http://a:1"}, {"url": "http://b:1"}]}, TOKEN_ENV,
     "workers[1].url: duplicate worker name 'gpu-box-1-llamacpp-1'"),
    (BASE, {**TOKEN_ENV, "SPOKEHUB_HEARTBEAT_S": "abc"},
     "SPOKEHUB_HEARTBEAT_S: must be a number, got 'abc'"),
    (BASE, {**TOKEN_ENV, "SPOKEHUB_HUB_URL": "hub:8080"}, "SPOKEHUB_HUB_URL: must be an"),
    (BASE, {**TOKEN_ENV, "SPOKEHUB_AGENT_ID": "x/y"}, "SPOKEHUB_AGENT_ID: use letters"),
    (BASE, {"SPOKEHUB_AGENT_TOKEN_FILE": "/nonexistent"}, "SPOKEHUB_AGENT_TOKEN_FILE: cannot"),
])
def test_validation_errors_name_the_key(raw: dict[str, Any], env: dict[str, str],
                                        message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw, env)
    assert str(err.value).startswith(message), str(err.value)


def test_not_a_mapping_and_empty_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: must be a mapping"):
        parse_config(["a"], TOKEN_ENV)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=f"^token_file: {empty} is empty"):
        parse({**BASE, "token_file": str(empty)}, {})


def test_load_config_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_config(path, TOKEN_ENV).agent_id == "gpu-box-1"
    path.write_text("hub_url: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_config(path, TOKEN_ENV)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml", TOKEN_ENV)
    path.write_bytes(b"hub_url: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path, TOKEN_ENV)
    # A missing *default* file means environment-only configuration.
    monkeypatch.setattr(agent.config, "DEFAULT_CONFIG_PATH", tmp_path / "missing.yaml")
    cfg = load_config(None, {**TOKEN_ENV, "SPOKEHUB_HUB_URL": "http://h:1"})
    assert cfg.hub_url == "http://h:1"


def test_cli_config_error_exit_2_no_traceback(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({**BASE, "workers": [{"url": "http://a:1",
                                                         "kind": "tgi"}]}))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == ("spokehub-agent: config error: workers[0].kind: must be one of "
                   "llamacpp, ollama, got 'tgi'\n")


def test_console_script_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("hub_url: http://h:1\nheartbeat_s: -1\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SPOKEHUB_AGENT_TOKEN": "x"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(path)],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("spokehub-agent: config error: heartbeat_s: must be "
                                   "between 0.1 and 3600, got -1")
    # The token is never a command-line option.
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--token", "x"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unrecognized arguments: --token" in proc.stderr


def test_example_config_is_valid(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "agent.example.yaml", TOKEN_ENV)
    assert cfg.hub_url == "http://hub.internal:8080"
    assert [w.advertise_url for w in cfg.workers] == ["http://10.0.0.5:8080",
                                                      "http://10.0.0.5:11434"]
