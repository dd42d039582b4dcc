"""A real Prometheus (Debian's ``prometheus``) as a test process, loading the shipped
config and rules from deploy/prometheus/ with short intervals."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import HUB_JOB, PROM_DIR, RULE_FILES, require, rewrite_for
from tests.support.procs import Proc, free_port, wait_http


def wait_until(pred: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.25) -> Any:
    """Poll until ``pred()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def prometheus_config(hub_target: str, self_target: str, interval: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the hub and Prometheus itself at the given
    addresses and ``interval`` for scrapes and rule evaluation."""
    config: dict[str, Any] = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, scrape_timeout=interval,
                            evaluation_interval=interval)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs[HUB_JOB]["static_configs"] = [{"targets": [hub_target]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [self_target]}]
    return config


class PrometheusServer:
    """``prometheus`` on 127.0.0.1:<free port>, storage in ``workdir``. ``for_overrides``
    shortens the ``for:`` of named alerts in the copies of the rule files it loads."""

    def __init__(self, workdir: Path, hub_target: str, interval: str = "1s",
                 for_overrides: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.dir = workdir / f"prometheus-{self.port}"
        self.dir.mkdir(parents=True)
        for path in RULE_FILES:
            doc = yaml.safe_load(path.read_text())
            for alert, duration in (for_overrides or {}).items():
                rewrite_for(doc, alert, duration)
            (self.dir / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        overridden = set(for_overrides or {})
        found = {r["alert"] for p in RULE_FILES
                 for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]
                 if "alert" in r}
        assert overridden <= found, f"no such alerts: {overridden - found}"
        config = prometheus_config(hub_target, f"127.0.0.1:{self.port}", interval)
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc = Proc([require("prometheus"), f"--config.file={self.config_path}",
                          f"--storage.tsdb.path={self.dir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}",
                          "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                         self.dir / "prometheus.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.proc.start()
        wait_http(f"{self.url}/-/ready", self.proc.proc, timeout=60)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; the JSON answer, also for 4xx (errors carry ``error``)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                doc: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            doc = json.load(exc)
        return doc

    def query(self, expr: str) -> list[dict[str, Any]]:
        doc = self.api("query", query=expr)
        assert doc["status"] == "success", (expr, doc)
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a single-series instant query, None if it has no series."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["data"]["alerts"]
        return [a for a in alerts if name is None or a["labels"]["alertname"] == name]

    def target_health(self, job: str) -> list[str]:
        active = self.api("targets", state="active")["data"]["activeTargets"]
        return [t["health"] for t in active if t["labels"].get("job") == job]
