"""Paths of the deployment artefacts under deploy/ and the external tools that check them.

The tools come from Debian packages that scripts/test.sh installs (prometheus for
``prometheus`` and ``promtool``, docker-compose, patchelf). A missing tool fails the
test that needs it, with the package to install: these checks are never skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import ROOT

DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
RULE_FILES = (PROM_DIR / "records.yml", PROM_DIR / "alerts.yml")
RULE_TESTS = PROM_DIR / "tests"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "spokehub-fleet.json"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
HUB_JOB = "spokehub-hub"

_PACKAGES = {"promtool": "prometheus", "prometheus": "prometheus",
             "docker-compose": "docker-compose", "patchelf": "patchelf", "readelf": "binutils"}


def require(tool: str) -> str:
    """The path of ``tool``, or fail naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: apt-get install {_PACKAGES.get(tool, tool)} "
                    "(scripts/test.sh installs it)", pytrace=False)
    return path


def run(argv: list[str], timeout: float = 120, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL)


def rewrite_for(rules_yaml: dict[str, object], alert: str, duration: str) -> int:
    """Set ``for:`` of every rule named ``alert`` in a loaded rule file; how many."""
    changed = 0
    groups = rules_yaml["groups"]
    assert isinstance(groups, list)
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["for"] = duration
                changed += 1
    return changed

