"""The systemd units pass ``systemd-analyze verify`` (no warnings at all) and stay
well hardened per ``systemd-analyze security --offline``; install.sh stages cleanly.

verify is run with ``--root`` on a scratch tree holding the units, stub binaries at
the real ExecStart paths and the host's system units, so a wrong ExecStart path or
a typo in any directive is reported instead of the missing /opt/spokehub venv.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import ROOT

UNITS = ("spokehub-agent.service", "spokehub-hub.service")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.5


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "systemd"], env=env,
                       capture_output=True, timeout=600, check=False)
        found = shutil.which("systemd-analyze")
        if found:
            return found
    pytest.skip("systemd-analyze is missing and cannot be installed here "
                "(needs root and apt-get)")


def stub(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A filesystem root with the units installed where install.sh puts them."""
    root = tmp_path / "root"
    if not SYSTEM_UNITS.is_dir():
        pytest.skip(f"{SYSTEM_UNITS} missing: systemd is not installed")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(ROOT / "systemd" / unit, root / "etc/systemd/system" / unit)
    for binary in ("opt/spokehub/venv/bin/spokehub-agent", "opt/spokehub/venv/bin/spokehub",
                   "usr/bin/kill"):
        stub(root / binary)
    (root / "bin").symlink_to("usr/bin")
    return root


def verify(tool: str, root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "verify", f"--root={root}",
                           *(str(root / "etc/systemd/system" / u) for u in units)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_units_verify_cleanly(root: Path) -> None:
    tool = systemd_analyze()
    proc = verify(tool, root, *UNITS)
    # verify exits 0 even for unknown keys; any output at all is a finding.
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_verify_catches_a_wrong_execstart_and_bad_keys(root: Path) -> None:
    """The check above is meaningful: the same setup flags real mistakes."""
    tool = systemd_analyze()
    (root / "opt/spokehub/venv/bin/spokehub-agent").unlink()
    unit = root / "etc/systemd/system" / "broken.service"
    text = (ROOT / "systemd" / "spokehub-hub.service").read_text()
    unit.write_text(text.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomes=yes"))
    proc = verify(tool, root, "spokehub-agent.service", "broken.service")
    out = proc.stdout + proc.stderr
    assert "/opt/spokehub/venv/bin/spokehub-agent is not executable" in out
    assert "Unknown key 'ProtectHomes'" in out


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure(root: Path, unit: str) -> None:
    tool = systemd_analyze()
    proc = subprocess.run([tool, "security", "--offline=yes", f"--root={root}",
                           "--no-pager", str(root / "etc/systemd/system" / unit)],
                          capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_unit_contents() -> None:
    agent = (ROOT / "systemd" / "spokehub-agent.service").read_text()
    hub = (ROOT / "systemd" / "spokehub-hub.service").read_text()
    for text in (agent, hub):
        for line in ("User=spokehub", "Restart=on-failure", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                     "CapabilityBoundingSet=\n", "ProtectKernelTunables=yes",
                     "ProtectControlGroups=yes",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                     "SystemCallFilter=@system-service"):
            assert line in text
    assert "ExecStart=/opt/spokehub/venv/bin/spokehub-agent --config " \
           "/etc/spokehub/agent.yaml\n" in agent
    assert "EnvironmentFile=-/etc/spokehub/agent.env\n" in agent
    # nvidia-smi needs the real /dev/nvidia* nodes, allowed one by one.
    assert "PrivateDevices=no\n" in agent and "DevicePolicy=closed\n" in agent
    assert "DeviceAllow=char-nvidia-frontend rw\n" in agent
    assert "ReadWritePaths" not in agent
    assert "ExecStart=/opt/spokehub/venv/bin/spokehub serve --config " \
           "/etc/spokehub/hub.yaml\n" in hub
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in hub
    assert "ReadWritePaths=/var/lib/spokehub\n" in hub and "PrivateDevices=yes\n" in hub


def test_install_script_stages_files(tmp_path: Path) -> None:
    script = ROOT / "deploy" / "install.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    dest = tmp_path / "stage"
    env = {"PATH": os.environ["PATH"], "DESTDIR": str(dest)}
    proc = subprocess.run(["bash", str(script), "--agent", "--hub"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    etc = dest / "etc"
    for unit in UNITS:
        assert (etc / "systemd/system" / unit).read_text() == \
            (ROOT / "systemd" / unit).read_text()
    agent_yaml = etc / "spokehub/agent.yaml"
    assert agent_yaml.read_text() == (ROOT / "configs/agent.example.yaml").read_text()
    assert stat.S_IMODE(agent_yaml.stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "spokehub/agent.env").stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "spokehub").stat().st_mode) == 0o750
    assert (dest / "var/lib/spokehub").is_dir()
    # A second run keeps the operator's edits.
    agent_yaml.write_text("hub_url: http://edited:1\n")
    proc = subprocess.run(["bash", str(script), "--agent"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "keeping existing /etc/spokehub/agent.yaml" in proc.stderr
    assert agent_yaml.read_text() == "hub_url: http://edited:1\n"
    usage = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert usage.returncode == 2 and "choose --agent, --hub or both" in usage.stderr
