"""A real Prometheus scraping a real hub in front of two real llama.cpp workers.

Prometheus (Debian's package) runs with the shipped deploy/prometheus/prometheus.yml
and rule files, at a 1 s scrape and evaluation interval. The only change to the
rules is in the test's copy: SpokehubWorkerDown's ``for:`` is 2 s instead of 2 min.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import workers_config
from tests.deploy.prom import PrometheusServer, wait_until
from tests.deploy.promql import (
    BUILTIN_SERIES,
    METRICS_BEING_ADDED,
    dashboard_exprs,
    exported_names,
    metric_names,
    recorded_names,
    rule_exprs,
    series_names,
)
from tests.deploy.tools import DASHBOARD, HUB_JOB, RULE_FILES
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker, tiny_model

DEADLINE_S = 90.0  # generous: two shared cores, other processes running


@dataclass
class Monitored:
    hub: HubProcess
    workers: tuple[LlamaWorker, LlamaWorker]
    prom: PrometheusServer


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    tiny_model(0)
    tiny_model(1)
    workers = (LlamaWorker("tiny", workdir, seed=0), LlamaWorker("tiny", workdir, seed=1))
    hub = HubProcess(workers_config(*workers), workdir)
    prom = PrometheusServer(workdir, f"127.0.0.1:{hub.port}",
                            for_overrides={"SpokehubWorkerDown": "2s"})
    try:
        for w in workers:
            w.start(wait=False)
        for w in workers:
            w.start_wait()
        hub.start()
        prom.start()
        wait_until(lambda: prom.target_health(HUB_JOB) == ["up"], DEADLINE_S,
                   "Prometheus scrapes the hub")
        # A counter series is born at its first increment; Prometheus computes rates
        # from the second sample on. One request first, so later ones show in rate().
        assert _chat(hub) == 200
        wait_until(lambda: prom.query('spokehub_requests_total{status="200"}'), DEADLINE_S,
                   "Prometheus sees the first request")
        yield Monitored(hub, workers, prom)
    finally:
        prom.stop()
        hub.stop()
        for w in workers:
            w.stop()


def _chat(hub: HubProcess, model: str = "tiny") -> int:
    body = json.dumps({"model": model, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "Hello"}]}).encode()
    req = urllib.request.Request(f"{hub.base_url}/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_prometheus_loads_and_evaluates_the_shipped_rules(monitored: Monitored) -> None:
    def groups() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = monitored.prom.api("rules")["data"]["groups"]
        rules = [r for g in found for r in g["rules"]]
        evaluated = all(r["health"] == "ok" for r in rules)
        return found if rules and evaluated else None

    found = wait_until(groups, DEADLINE_S, "every rule evaluated once without error")
    assert {g["name"] for g in found} == {"spokehub.records", "spokehub.alerts"}
    loaded = sum(len(g["rules"]) for g in found)
    assert loaded == len(rule_exprs(RULE_FILES))


def test_request_counter_moves(monitored: Monitored) -> None:
    prom, hub = monitored.prom, monitored.hub
    served = 'sum(spokehub_requests_total{job="spokehub-hub",status="200"})'
    before = prom.value(served) or 0.0
    statuses = [_chat(hub) for _ in range(5)]
    assert statuses == [200] * 5
    after = wait_until(lambda: (v := prom.value(served)) is not None and v >= before + 5 and v,
                       DEADLINE_S, "Prometheus sees the 5 requests")
    assert after >= before + 5
    rate = wait_until(lambda: (v := prom.value("spokehub:requests:rate5m")) and v > 0 and v,
                      DEADLINE_S, "the request-rate recording rule sees the traffic")
    assert rate > 0
    assert prom.value("spokehub:request_errors:ratio_rate5m") == 0.0


def test_token_recording_rules_see_traffic(monitored: Monitored) -> None:
    """The token metrics of a real hub feed the shipped recording rules: prompt tokens
    per model and the prompt cache hit ratio (the same prompt twice: llama.cpp reuses
    it from its cache)."""
    prom, hub = monitored.prom, monitored.hub
    for _ in range(4):
        assert _chat(hub) == 200
    rate = wait_until(lambda: (v := prom.value('model:spokehub_prompt_tokens:rate5m'
                                               '{model="tiny"}')) and v > 0 and v,
                      DEADLINE_S, "prompt tokens per model")
    assert rate > 0
    ratio = wait_until(lambda: (v := prom.value('model:spokehub_prompt_cache_hit:ratio_rate5m'
                                                '{model="tiny"}')) and v > 0 and v,
                       DEADLINE_S, "prompt cache hit ratio")
    assert 0 < ratio <= 1
    ttft = 'spokehub_time_to_first_token_seconds_count{job="spokehub-hub",model="tiny"}'
    assert wait_until(lambda: (v := prom.value(ttft)) and v > 0 and v, DEADLINE_S,
                      "time to first token samples") > 0


def test_every_dashboard_and_rule_expression_evaluates(monitored: Monitored) -> None:
    """Prometheus itself accepts every query: parse and evaluation errors would show."""
    for where, expr in dashboard_exprs(DASHBOARD) + rule_exprs(RULE_FILES):
        doc = monitored.prom.api("query", query=expr)
        assert doc["status"] == "success", (where, expr, doc.get("error"))


def test_expressions_use_only_metrics_the_hub_exports(monitored: Monitored) -> None:
    """Every metric name in the dashboard and rules is on a real hub's /metrics page
    (after traffic and an error), a series being added to the hub, a recording rule
    or a series Prometheus makes itself."""
    hub = monitored.hub
    assert _chat(hub) == 200
    assert _chat(hub, model="no-such-model") == 404  # spokehub_errors_total{kind}
    with urllib.request.urlopen(f"{hub.url}/metrics", timeout=10) as resp:
        exported = exported_names(resp.read().decode())
    assert {"spokehub_requests_total", "spokehub_errors_total", "spokehub_worker_up",
            "spokehub_breaker_opened_total", "spokehub_worker_slots_total",
            "spokehub_time_to_first_byte_seconds_bucket"} <= exported
    being_added: set[str] = set()
    for name, kind in METRICS_BEING_ADDED.items():
        being_added |= series_names(name, kind)
    known = exported | being_added | recorded_names(RULE_FILES) | BUILTIN_SERIES
    unknown = {}
    for where, expr in dashboard_exprs(DASHBOARD) + rule_exprs(RULE_FILES):
        if missing := metric_names(expr) - known:
            unknown[where] = sorted(missing)
    assert not unknown, unknown
    # A name in the being-added list that the hub now exports is fine too; the list
    # only has to shrink.


def test_worker_down_alert_fires_when_a_worker_is_killed(monitored: Monitored) -> None:
    prom = monitored.prom
    victim = monitored.workers[1]
    wait_until(lambda: prom.value("sum(spokehub_worker_up)") == 2.0, DEADLINE_S,
               "both workers up in Prometheus")
    assert prom.alerts("SpokehubWorkerDown") == []
    assert prom.alerts("SpokehubNoHealthyWorker") == []
    started = time.monotonic()
    victim.kill()

    def firing() -> list[dict[str, Any]]:
        return [a for a in prom.alerts("SpokehubWorkerDown") if a["state"] == "firing"]

    (alert,) = wait_until(firing, DEADLINE_S, "SpokehubWorkerDown firing")
    took = time.monotonic() - started
    assert alert["labels"]["worker"] == "w1"
    assert alert["labels"]["severity"] == "warning"
    assert "w1" in alert["annotations"]["summary"]
    assert prom.query('ALERTS{alertname="SpokehubWorkerDown", alertstate="firing"}')
    # The other worker keeps serving, and nothing says the hub has no worker.
    assert all(a["labels"]["worker"] == "w1" for a in prom.alerts("SpokehubWorkerDown"))
    assert prom.alerts("SpokehubNoHealthyWorker") == []
    assert _chat(monitored.hub) == 200
    print(f"SpokehubWorkerDown firing {took:.1f}s after the kill")
