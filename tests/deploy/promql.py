"""PromQL found in the shipped rules and dashboard, and the metric names it uses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

# Metrics the hub is getting from work in progress elsewhere (routing decisions).
# Rules and panels may use them before a hub exports them; tests that need their
# values use synthetic series.
METRICS_BEING_ADDED: dict[str, str] = {
    "spokehub_route_decisions_total": "counter",
}
# Series Prometheus makes itself: per-target scrape series and the alert state.
BUILTIN_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                  "scrape_samples_post_metric_relabeling", "scrape_series_added",
                  "ALERTS", "ALERTS_FOR_STATE"}

# Grafana's built-in variables, replaced by a duration so the expression is plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "offset", "bool", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (not functions, labels or keywords)."""
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = _GROUPING.sub(" ", s)
    names: set[str] = set()
    for m in _IDENT.finditer(s):
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 5m, 0.5
            continue
        if m.group(0).lower() in _KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group(0))
    return names


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_panels(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text())
    return list(_panels(doc["panels"]))


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    """(where, PromQL) for every query of every panel, Grafana variables substituted."""
    out = []
    for panel in dashboard_panels(path):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} query {target['refId']}"
            out.append((where, grafana_to_promql(target["expr"])))
    return out


def rules(paths: Iterable[Path]) -> list[dict[str, Any]]:
    return [rule for path in paths for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def rule_exprs(paths: Iterable[Path]) -> list[tuple[str, str]]:
    return [(f"{'alert' if 'alert' in r else 'record'} {r.get('alert') or r['record']}",
             r["expr"]) for r in rules(paths)]


def recorded_names(paths: Iterable[Path]) -> set[str]:
    return {r["record"] for r in rules(paths) if "record" in r}


def series_names(name: str, kind: str) -> set[str]:
    """The series names a metric family of ``kind`` appears as."""
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "counter":
        return {name, f"{name.removesuffix('_total')}_created"}
    return {name}


def exported_names(exposition: str) -> set[str]:
    """Series names in a /metrics page, including families declared with no sample yet
    (e.g. slots before any agent reported them)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names |= series_names(name, kind)
        elif line and not line.startswith("#"):
            m = _IDENT.match(line)
            if m:
                names.add(m.group(0))
    return names


def parse_check_rules(exprs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A rule file with each expression as a recording rule, for ``promtool check rules``
    (which parses PromQL offline)."""
    return {"groups": [{"name": "parse-check", "rules": [
        {"record": f"parse_check:expr_{i}", "expr": expr,
         "labels": {"where": where[:200]}} for i, (where, expr) in enumerate(exprs)]}]}
