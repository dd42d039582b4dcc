"""Spill-over decisions (pure): who may spill, which budget applies, when to stop queueing."""

from __future__ import annotations

from typing import Any

import pytest

from hub.backends.model_map import rename_model
from hub.config.kit import ConfigError
from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec, parse_worker
from hub.fleet.registry import ProbeResult, Registry
from hub.forward.call import Call
from hub.forward.proxy import Proxy
from hub.forward.spill import (
    SpillPlan,
    enabled_for,
    first_byte_left,
    plan_for,
    spill_now_instead_of_queueing,
)
from hub.forward.spill_config import parse_spill
from hub.upstream import Pool

CFG = parse_spill({
    "enabled": False,
    "models": {"tiny": True, "big": False},
    "tenants": {"acme": True, "globex": False,
                "initech": {"max_queue_ms": {"interactive": 100},
                            "first_byte_ms": {"default": 900}}},
    "max_queue_ms": {"interactive": 500, "batch": 30000, "default": 5000},
    "first_byte_ms": {"interactive": 2000},
})


@pytest.mark.parametrize(("tenant", "model", "want"), [
    ("acme", "big", True),  # the tenant's own setting wins over the model's
    ("globex", "tiny", False),
    ("initech", "tiny", True),  # no enabled of its own: the model decides
    ("initech", "big", False),
    ("other", "tiny", True),
    ("other", "unlisted", False),  # neither: the section's default
])
def test_tenant_over_model_over_default(tenant: str, model: str, want: bool) -> None:
    assert enabled_for(CFG, tenant, model) is want
    assert (plan_for(CFG, tenant, model, "interactive") is not None) is want


def test_default_on_with_a_tenant_opted_out() -> None:
    cfg = parse_spill({"enabled": True, "tenants": {"globex": {"enabled": False}}})
    assert enabled_for(cfg, "acme", "m") and not enabled_for(cfg, "globex", "m")


@pytest.mark.parametrize(("tenant", "priority", "want"), [
    ("acme", "interactive", SpillPlan(max_queue_s=0.5, first_byte_s=2.0)),
    ("acme", "batch", SpillPlan(max_queue_s=30.0, first_byte_s=None)),
    ("acme", "bulk", SpillPlan(max_queue_s=5.0, first_byte_s=None)),  # "default" entry
    # The tenant's budget for the class wins; its own "default" covers the rest.
    ("initech", "interactive", SpillPlan(max_queue_s=0.1, first_byte_s=0.9)),
    ("initech", "batch", SpillPlan(max_queue_s=30.0, first_byte_s=0.9)),
])
def test_budgets_per_class_and_tenant(tenant: str, priority: str, want: SpillPlan) -> None:
    assert plan_for(CFG, tenant, "tiny", priority) == want


def test_no_budgets_configured_means_no_budget_triggers() -> None:
    assert plan_for(parse_spill({"enabled": True}), "t", "m", "interactive") == SpillPlan()


@pytest.mark.parametrize(("plan", "waiting", "max_waiters", "want"), [
    (None, 0, 10, False),  # may not spill: queue as ever
    (None, 10, 10, False),  # ... and get the queue's own 503
    (SpillPlan(), 3, 10, False),  # no queue budget: wait the queue's own timeout
    (SpillPlan(), 10, 10, True),  # the queue would refuse it: spill instead
    (SpillPlan(max_queue_s=0.5), 3, 10, False),  # wait up to the budget
    (SpillPlan(max_queue_s=0.0), 0, 10, True),  # a zero budget: never queue
    (SpillPlan(max_queue_s=0.5), 10, 10, True),
])
def test_when_to_spill_instead_of_queueing(plan: SpillPlan | None, waiting: int,
                                           max_waiters: int, want: bool) -> None:
    assert spill_now_instead_of_queueing(plan, waiting, max_waiters) is want


def test_first_byte_budget_counts_from_the_first_local_attempt() -> None:
    plan = SpillPlan(first_byte_s=2.0)
    assert first_byte_left(None, 0.0, 100.0) is None
    assert first_byte_left(SpillPlan(), 0.0, 100.0) is None
    assert first_byte_left(plan, 0.0, 100.0) == 2.0  # not sent yet: the whole budget
    assert first_byte_left(plan, 100.0, 100.5) == 1.5  # a failover gets what is left
    assert first_byte_left(plan, 100.0, 103.0) == 0.0


@pytest.mark.parametrize(("raw", "where"), [
    ({"first_byte_ms": {"interactive": 0}}, r"spill\.first_byte_ms\.interactive"),
    ({"max_queue_ms": {"interactive": -1}}, r"spill\.max_queue_ms\.interactive"),
    ({"max_queue_ms": {"bad class!": 1}}, r"spill\.max_queue_ms\.bad class!"),
    ({"tenants": {"acme": {"enabled": "yes"}}}, r"spill\.tenants\.acme\.enabled"),
    ({"tenants": {"acme": {"max_wait": 1}}}, r"spill\.tenants\.acme\.max_wait"),
    ({"models": {"tiny": 1}}, r"spill\.models\.tiny"),
    ({"enable": True}, r"spill\.enable"),
])
def test_config_errors_name_the_key(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        parse_config({"spill": raw})


def test_zero_queue_budget_is_allowed() -> None:
    assert parse_spill({"max_queue_ms": {"batch": 0}}).budgets.max_queue_s == {"batch": 0.0}


FALLBACK = {"name": "cloud", "kind": "openai", "url": "http://cloud.example/v1",
            "tier": "fallback", "api_key_env": "CLOUD_KEY",
            "model_map": {"tiny": "gpt-mini", "same": "same"}, "models": ["extra"]}


def test_fallback_worker_serves_its_map_keys() -> None:
    spec = parse_worker(FALLBACK, "workers[1]")
    assert spec.fallback and spec.models == ("tiny", "same", "extra")
    assert spec.upstream_model("tiny") == "gpt-mini"
    assert spec.upstream_model("same") is None  # same name: nothing to rename
    assert spec.upstream_model("extra") is None
    local = parse_worker({"name": "w0", "url": "http://w0:8080"}, "workers[0]")
    assert local.tier == "local" and not local.fallback


@pytest.mark.parametrize(("change", "where"), [
    ({"kind": "llamacpp"}, r"workers\[1\]\.tier: a fallback worker must be kind openai"),
    ({"tier": "cloud"}, r"workers\[1\]\.tier"),
    ({"model_map": {"tiny": ""}}, r"workers\[1\]\.model_map\.tiny"),
    ({"model_map": ["tiny"]}, r"workers\[1\]\.model_map"),
    ({"model_map": None, "models": None}, r"workers\[1\]\.model_map: a fallback worker"),
])
def test_fallback_worker_errors(change: dict[str, Any], where: str) -> None:
    raw = {k: v for k, v in {**FALLBACK, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=where):
        parse_worker(raw, "workers[1]")


def test_model_map_only_on_fallback_workers() -> None:
    with pytest.raises(ConfigError, match=r"workers\[0\]\.model_map: only for tier"):
        parse_worker({"name": "w0", "url": "http://w0", "model_map": {"a": "b"}}, "workers[0]")


def _registry(max_concurrency: int = 0) -> Registry:
    registry = Registry([WorkerSpec("w0", "http://w0", max_concurrency=max_concurrency),
                         parse_worker(FALLBACK, "workers[1]")])
    for w in registry:
        registry.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"tiny"})))
    return registry


def test_fallback_workers_are_never_ordinary_candidates() -> None:
    registry = _registry()
    assert [w.name for w in registry.candidates("tiny")] == ["w0"]
    assert [w.name for w in registry.candidates("tiny", "/chat/completions")] == ["w0"]
    assert [w.name for w in registry.fallbacks("tiny", "/chat/completions")] == ["cloud"]
    assert registry.fallbacks("tiny", "/tokenize") == []  # not a route it takes
    assert registry.serves("extra")  # the fallback's models count as served


def test_a_full_local_fleet_is_saturated_whatever_the_fallback() -> None:
    registry = _registry(max_concurrency=1)
    w0 = registry.get("w0")
    assert w0 is not None
    with w0.in_flight_slot():
        assert registry.saturated("tiny", "/chat/completions")
        assert registry.candidates("tiny") == []
    assert not registry.saturated("tiny")


def test_rename_model() -> None:
    out = rename_model(b'{"model":"tiny","messages":[{"content":"h\\u00e9"}]}',
                       "application/json", "gpt-mini")
    assert out == '{"model":"gpt-mini","messages":[{"content":"hé"}]}'.encode()
    with pytest.raises(ValueError, match="multipart/form-data"):
        rename_model(b"--x", "multipart/form-data; boundary=x", "gpt-mini")
    with pytest.raises(ValueError, match="not a JSON object"):
        rename_model(b"[1]", "application/json", "gpt-mini")


def _proxy(spill: dict[str, Any]) -> Proxy:
    registry = _registry()
    return Proxy(registry, Pool(), parse_config({"spill": spill}))


async def test_the_plan_needs_config_a_fallback_with_room_and_the_gate() -> None:
    proxy = _proxy({"enabled": True, "first_byte_ms": {"interactive": 1000}})
    call = Call(request_id="r", route="/chat/completions", model="tiny", tenant="acme")
    assert proxy._spill_plan(call) == SpillPlan(first_byte_s=1.0)
    proxy.spill_gate = lambda tenant: tenant != "acme"
    assert proxy._spill_plan(call) is None  # refused by the gate: as if disabled
    proxy.spill_gate = lambda tenant: True
    cloud = proxy.registry.get("cloud")
    assert cloud is not None
    proxy.registry.mark_unreachable(cloud, "down")
    assert proxy._spill_plan(call) is None  # no fallback could take it: stay local
    other = Call(request_id="r", route="/embeddings", model="unserved", tenant="acme")
    assert proxy._spill_plan(other) is None


async def test_a_reload_takes_the_new_spill_section() -> None:
    proxy = _proxy({"enabled": False})
    call = Call(request_id="r", route="/chat/completions", model="tiny", tenant="acme")
    assert proxy._spill_plan(call) is None
    proxy.configure(parse_config({"spill": {"tenants": {"acme": True}}}))
    assert proxy._spill_plan(call) == SpillPlan()
