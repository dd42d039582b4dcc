"""The Grafana dashboard and provisioning files: shape, coverage, and PromQL that parses.

That every metric name they use is exported by a real hub is checked in
test_prometheus_e2e.py, where a hub runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import (
    dashboard_exprs,
    dashboard_panels,
    metric_names,
    parse_check_rules,
    rule_exprs,
)
from tests.deploy.tools import DASHBOARD, GRAFANA_DIR, RULE_FILES, require, run

DATASOURCE_UID = "spokehub-prometheus"


def _datasources() -> list[dict[str, object]]:
    doc = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
                         .read_text())
    assert doc["apiVersion"] == 1
    sources: list[dict[str, object]] = doc["datasources"]
    return sources


def test_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "spokehub-fleet" and doc["title"]
    panels = dashboard_panels(DASHBOARD)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in [panel, *targets]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    (var,) = [v for v in doc["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    assert var["current"]["value"] == DATASOURCE_UID


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels(DASHBOARD):
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[x, y]!r}"
                cells[x, y] = panel["title"]


def test_dashboard_covers_the_fleet() -> None:
    """Requests and errors by kind, first-token latency and tokens/s per model,
    workers (health, breaker, slots, VRAM), prompt cache hits, per-tenant rejections."""
    used: set[str] = set()
    for _, expr in dashboard_exprs(DASHBOARD):
        used |= metric_names(expr)
    wanted = {"spokehub_requests_total", "spokehub_errors_total",
              "spokehub_time_to_first_token_seconds_bucket", "spokehub_completion_tokens_total",
              "spokehub_worker_up", "spokehub_breaker_state", "spokehub_worker_slots_busy",
              "spokehub_worker_slots_total", "spokehub_worker_vram_free_mb",
              "model:spokehub_prompt_cache_hit:ratio_rate5m",
              "spokehub_admission_rejected_total", "spokehub_capacity_queue_length"}
    assert wanted <= used, sorted(wanted - used)
    per_model = [e for _, e in dashboard_exprs(DASHBOARD)
                 if "time_to_first_token" in e or "completion_tokens" in e]
    assert all("by (model" in e for e in per_model), per_model


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard() -> None:
    (source,) = _datasources()
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True
    doc = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "spokehub.yml")
                         .read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/spokehub"


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (model, le) (rate(a_bucket{x="b_c", y=~"d"}[5m])))'
            ' / on (job) group_left (z) b:rec:ratio offset 1h and c_total > 1e3'
            ' unless vector(0) or sum without (le) (d[10m:1m])')
    assert metric_names(expr) == {"a_bucket", "b:rec:ratio", "c_total", "d"}


def _check_parses(exprs: list[tuple[str, str]], tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "parse-check.yml"
    path.write_text(yaml.safe_dump(parse_check_rules(exprs)))
    out = run([require("promtool"), "check", "rules", str(path)])
    return out.returncode, out.stdout + out.stderr


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each dashboard query and rule expression (as a recording rule
    in a generated file): a PromQL syntax error anywhere fails here, offline."""
    exprs = dashboard_exprs(DASHBOARD) + rule_exprs(RULE_FILES)
    assert len(exprs) > 40
    code, report = _check_parses(exprs, tmp_path)
    assert code == 0, report
    assert f"SUCCESS: {len(exprs)} rules found" in report


@pytest.mark.parametrize("bad", ["sum(rate(spokehub_requests_total[5m])",
                                 "rate(spokehub_requests_total)",
                                 "spokehub_requests_total{status=5}"])
def test_a_broken_expression_is_caught(tmp_path: Path, bad: str) -> None:
    code, report = _check_parses([("good", "up"), ("bad", bad)], tmp_path)
    assert code != 0, report
