from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.config.schema import ConfigError, load_config, parse_config
from tests.support.procs import ROOT


def test_defaults_and_example_config_parse() -> None:
    cfg = parse_config({"workers": [{"name": "gpu1", "url": "http://127.0.0.1:8081/"}]})
    assert cfg.listen.port == 8080
    assert cfg.workers[0].url == "http://127.0.0.1:8081"
    assert cfg.workers[0].kind == "llamacpp"
    example = load_config(ROOT / "configs" / "example.yaml")
    assert example.routing.policy == "round_robin"
    assert len(example.workers) == 2
    prod = load_config(ROOT / "configs" / "hub.example.yaml")
    assert prod.auth.enabled and prod.routing.policy == "least_loaded"
    assert prod.agents.state_file == "/var/lib/spokehub/agents.json"


@pytest.mark.parametrize(("raw", "message"), [
    ({"listen": {"port": "x"}}, "listen.port: must be an integer"),
    ({"listen": {"port": 70000}}, "listen.port: must be between 0 and 65535"),
    ({"listen": {"hots": "x"}}, "listen.hots: unknown key"),
    ({"routing": {"policy": "random"}}, "routing.policy: must be one of"),
    ({"health": {"interval_s": 0}}, "health.interval_s: must be > 0"),
    ({"timeouts": {"first_byte_s": -1}}, "timeouts.first_byte_s: must be > 0"),
    ({"workers": [{"url": "http://x"}]}, "workers[0].name: is required"),
    ({"workers": [{"name": "a", "url": "ftp://x"}]}, "workers[0].url: must be an http"),
    ({"workers": [{"name": "a", "url": "http://x", "kind": "tgi"}]}, "workers[0].kind"),
    ({"workers": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]},
     "workers[1].name: duplicate"),
    ({"workers": {"a": 1}}, "workers: must be a list"),
    ({"aliases": {"gpt-4o": 5}}, "aliases.gpt-4o: must be a non-empty string"),
    ({"bogus": 1}, "bogus: unknown key"),
    ([1, 2], "config: must be a mapping"),
])
def test_errors_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True,
                          check=False,
                          cwd=ROOT, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    ok = _cli("check-config", str(ROOT / "configs" / "example.yaml"))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers:\n  - {name: a, url: http://x, kind: nope}\n")
    res = _cli("check-config", str(bad))
    assert res.returncode == 2
    assert "workers[0].kind" in res.stderr
    assert "Traceback" not in res.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("listen: [\n")
    res = _cli("check-config", str(broken))
    assert res.returncode == 2 and "not valid YAML" in res.stderr
    res = _cli("serve", "--config", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "cannot read" in res.stderr
