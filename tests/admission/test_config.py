"""parse_admission: defaults, per-tenant overrides, errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from hub.admission.caps import Caps
from hub.admission.limiter import AdmissionConfig, TenantLimits, parse_admission
from hub.config.schema import ConfigError


def test_absent_section_admits_everything() -> None:
    cfg = parse_admission(None)
    assert cfg == AdmissionConfig(default=TenantLimits(), tenants=cfg.tenants)
    assert cfg.default.unlimited and dict(cfg.tenants) == {}
    assert cfg.worker_queue_max == 1000 and cfg.worker_queue_timeout_s == 60.0


def test_full_section_and_overrides() -> None:
    cfg = parse_admission({
        "requests_per_s": 5, "burst": 10, "max_queue": 4, "queue_timeout_s": 2,
        "tokens_per_min": 20000, "max_messages": 64, "max_prompt_chars": 100000,
        "max_tokens_cap": 1024, "worker_queue_max": 10, "worker_queue_timeout_s": 5,
        "tenants": {
            "acme": {"requests_per_s": 50},
            "batch": {"requests_per_s": None, "tokens_per_min": None,
                      "max_tokens_cap": None},
            "tight": {"burst": 1, "max_queue": 0},
        }})
    d = cfg.default
    assert (d.requests_per_s, d.burst, d.max_queue, d.queue_timeout_s, d.tokens_per_min) == (
        5.0, 10.0, 4, 2.0, 20000.0)
    assert d.caps == Caps(max_messages=64, max_prompt_chars=100000, max_tokens_cap=1024)
    acme = cfg.for_tenant("acme")
    assert acme.requests_per_s == 50.0 and acme.burst == 50.0  # a new rate, its own burst
    assert acme.caps == d.caps and acme.max_queue == 4
    batch = cfg.for_tenant("batch")
    assert batch.unlimited and batch.burst is None and batch.caps.max_tokens_cap is None
    assert batch.caps.max_messages == 64
    tight = cfg.for_tenant("tight")
    assert (tight.requests_per_s, tight.burst, tight.max_queue) == (5.0, 1.0, 0)
    assert cfg.for_tenant("someone-else") is cfg.default
    assert cfg.worker_queue_max == 10 and cfg.worker_queue_timeout_s == 5.0


def test_burst_defaults_to_one_second_of_rate() -> None:
    assert parse_admission({"requests_per_s": 0.5}).default.burst == 1.0
    assert parse_admission({"requests_per_s": 20}).default.burst == 20.0


@pytest.mark.parametrize(("raw", "message"), [
    ([], "admission: must be a mapping"),
    ({"requests_per_s": 0}, "admission.requests_per_s: must be > 0"),
    ({"requests_per_s": "fast"}, "admission.requests_per_s: must be a number"),
    ({"requests_per_s": 1, "burst": 0.5}, "admission.burst: must be >= 1"),
    ({"burst": 5}, "admission.burst: needs admission.requests_per_s"),
    ({"max_queue": -1}, "admission.max_queue: must be between 0 and"),
    ({"max_queue": None}, "admission.max_queue: must not be null"),
    ({"queue_timeout_s": -1}, "admission.queue_timeout_s"),
    ({"tokens_per_min": -5}, "admission.tokens_per_min"),
    ({"max_messages": 0}, "admission.max_messages: must be >= 1"),
    ({"max_tokens_cap": 1.5}, "admission.max_tokens_cap: must be an integer"),
    ({"worker_queue_timeout_s": 0}, "admission.worker_queue_timeout_s"),
    ({"limits": {}}, "admission.limits: unknown key"),
    ({"tenants": []}, "admission.tenants: must be a mapping"),
    ({"tenants": {"acme": 5}}, "admission.tenants.acme: must be a mapping"),
    ({"tenants": {"acme": {"rps": 5}}}, "admission.tenants.acme.rps: unknown key"),
    ({"tenants": {"acme": {"worker_queue_max": 5}}},
     "admission.tenants.acme.worker_queue_max: unknown key"),
    ({"tenants": {"acme": {"burst": 0}}}, "admission.tenants.acme.burst: must be"),
    ({"tenants": {7: {}}}, "admission.tenants: tenant names must be non-empty strings"),
])
def test_errors_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_admission(raw)
    assert message in str(info.value)
