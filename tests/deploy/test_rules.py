"""The shipped Prometheus rules, checked and unit-tested with the real promtool."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import PROM_DIR, RULE_FILES, RULE_TESTS, require, run

SEVERITIES = {"critical", "warning"}


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _alert_cases() -> list[dict[str, Any]]:
    doc = yaml.safe_load((RULE_TESTS / "alerts_test.yml").read_text())
    return [case for test in doc["tests"] for case in test.get("alert_rule_test", [])]


def test_rules_pass_promtool_check() -> None:
    out = run([require("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(RULE_FILES)


def test_rule_unit_tests_pass() -> None:
    tests = sorted(RULE_TESTS.glob("*.yml"))
    assert {t.name for t in tests} >= {"alerts_test.yml", "records_test.yml"}
    out = run([require("promtool"), "test", "rules", *map(str, tests)], cwd=PROM_DIR)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(tests), out.stdout


def test_shipped_prometheus_config_is_valid() -> None:
    out = run([require("promtool"), "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert sorted(doc["rule_files"]) == sorted(p.name for p in RULE_FILES)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = _alert_cases()
    for name in {a["alert"] for a in _alerts()}:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


def test_every_alert_says_what_and_where() -> None:
    """Severity, summary and description on every alert; an alert about one worker,
    model or agent names it in its summary and description."""
    fired_labels: dict[str, set[str]] = {}
    for case in _alert_cases():
        for exp in case["exp_alerts"]:
            fired_labels.setdefault(case["alertname"], set()).update(exp["exp_labels"])
    for rule in _alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        ann = rule["annotations"]
        assert ann.get("summary") and ann.get("description"), name
        for label in ("worker", "model", "agent", "instance"):
            if label in fired_labels[name] and label != "instance":
                assert f"$labels.{label}" in ann["summary"], (name, label)
                assert f"$labels.{label}" in ann["description"], (name, label)
        if "for" in rule:
            assert rule["for"].endswith("m"), f"{name}: for: {rule['for']} (minutes expected)"


# Each guard in the rules that keeps an alert quiet, and the quiet case that needs it:
# without the guard, promtool's unit tests must fail. This proves the quiet cases test
# the guard, not a typo in a series name.
GUARDS = [
    pytest.param("alerts.yml", "\n          unless on (job, instance, worker) "
                 "spokehub_worker_draining == 1", "",
                 "worker down fires after 2m; a drained or healthy worker stays quiet",
                 id="drained-worker-not-down"),
    pytest.param("alerts.yml", "\n          and spokehub:requests:rate5m > 0.05", "",
                 "error ratio stays quiet when a quiet hub fails its one request",
                 id="error-ratio-needs-traffic"),
    pytest.param("alerts.yml", "\n          and model:spokehub_prompt_tokens:rate5m > 10", "",
                 "prompt cache hit ratio collapse fires for the model that lost its cache",
                 id="cache-collapse-needs-traffic"),
    pytest.param("alerts.yml",
                 "\n          and model:spokehub_prompt_cache_hit:ratio_rate1h > 0.2", "",
                 "prompt cache hit ratio collapse fires for the model that lost its cache",
                 id="cache-collapse-needs-a-cache"),
    pytest.param("records.yml", 'status=~"5.."', 'status=~"[45].."',
                 "error ratio stays quiet for few 5xx, for 4xx", id="4xx-not-errors"),
    pytest.param("alerts.yml", "expr: spokehub_breaker_state > 0",
                 "expr: spokehub_breaker_state >= 0",
                 "breaker open fires when it never closes", id="closed-breaker-quiet"),
]


@pytest.mark.parametrize(("file", "old", "new", "case"), GUARDS)
def test_quiet_cases_depend_on_their_guard(tmp_path: Path, file: str, old: str, new: str,
                                           case: str) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, copy)
    target = copy / file
    text = target.read_text()
    assert old in text, f"guard not found in {file}: {old!r}"
    target.write_text(text.replace(old, new))
    assert run([require("promtool"), "check", "rules", str(target)]).returncode == 0
    out = run([require("promtool"), "test", "rules", *map(str, sorted((copy / "tests")
                                                                      .glob("*.yml")))],
              cwd=copy)
    report = out.stdout + out.stderr
    assert out.returncode != 0, f"unit tests still pass without the guard:\n{report}"
    assert f"name: {case}" in report, report
